"""Reading stored steers: by the hash of a request, and by permalink id."""

from atlas.errors import NotFound
from atlas.steering.models import SteerOutput


def steer_output_found(key: str) -> SteerOutput | None:
    return SteerOutput.objects.select_related("language_model").filter(key=key).first()


def steer_output_get(output_id: str) -> SteerOutput:
    output = SteerOutput.objects.select_related("language_model").filter(pk=output_id).first()
    if output is None:
        raise NotFound(f"No steering result '{output_id}'; /steer makes a new one.")
    return output
