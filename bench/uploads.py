"""Do uploads block reads? GET /api/feature latency while two maximal archive uploads are checked and stored.

Builds a scratch database (`atlas_bench_uploads`, dropped after) holding a published SAE to read (bench.api's
features_store) and a model record with hooks to upload to; serves it with gunicorn on loopback as `make demo`
does (2 workers, gthread with 4 threads each), with ATLAS_MAX_UPLOAD_BYTES set to --unpacked-mib. It writes one
SAELens archive (.tar.gz of cfg.json and random float32 weights) that unpacks to just under that limit. From a
second process it sends GET /api/feature at --rate per second, open-loop (each latency counts from when the request
was due), first with the server idle, then while two uploads of that archive run at once from this process (raw
sockets and sendfile, so the client costs little CPU). Only requests due while an upload is running count as
"during". --baseline measures the same with gunicorn's sync workers too (the behaviour before: an upload holds a
whole worker process).

Prints p50/p99 for each phase and the uploads' durations, then `RESULT api_p50_idle_ms=...`,
`RESULT api_p99_idle_ms=...`, `RESULT api_p50_during_uploads_ms=...`, `RESULT api_p99_during_uploads_ms=...`
(the target: <= 50 ms), `RESULT api_errors_during_uploads=...` and, with --baseline, the same with a
`baseline_` prefix.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.scratch import ROOT, scratch_database

SCRATCH_DATABASE = "atlas_bench_uploads"
MODEL, READ_SAE, DATASET = "bench", "bench-api", "bench"
HOST = "127.0.0.1"
HOOK = "blocks.5.hook_resid_post"
D_IN = 576  # bench.ingest_orm_baseline's model record
N_FEATURES = 10_000  # features of the SAE that is read
WORKERS = 2  # as `make demo` serves
WARMUP_SECONDS = 3.0
MIB = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    due: float  # time.monotonic() when the request was due (one clock for every process on the machine)
    latency_ms: float | None  # None: an error, or no answer within the timeout


@dataclass(frozen=True)
class UploadDone:
    started: float
    sent: float  # when the last byte of the body was sent: the server has parsed nearly all of it
    ended: float
    status: str


# The load process: GETs at a fixed rate until a stop file appears.


async def _get(port: int, path: str, due: float, timeout: float) -> Answer:
    async def status() -> bytes:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
            await reader.read()
        finally:
            writer.close()
        return line.split(b" ")[1]

    try:
        code = await asyncio.wait_for(status(), timeout)
    except (OSError, TimeoutError, IndexError):
        return Answer(due, None)
    return Answer(due, (time.monotonic() - due) * 1000 if code == b"200" else None)


async def _load(port: int, rate: float, seconds: float, stop_file: Path, timeout: float) -> list[Answer]:
    pick = random.Random(0)
    start = time.monotonic() + 0.1
    requests: list[asyncio.Task[Answer]] = []
    for number in range(round(rate * seconds)):
        if stop_file.exists():
            break
        due = start + number / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        path = f"/api/feature/{MODEL}/{READ_SAE}/{pick.randrange(N_FEATURES)}"
        requests.append(asyncio.create_task(_get(port, path, due, timeout)))
    return list(await asyncio.gather(*requests))


def load_main(args: argparse.Namespace) -> None:
    answers = asyncio.run(_load(args.port, args.rate, args.seconds, Path(args.stop_file), args.timeout))
    print(json.dumps([[answer.due, answer.latency_ms] for answer in answers]))


@contextmanager
def load_running(port: int, args: argparse.Namespace, seconds: float, out: list[Answer]) -> Iterator[None]:
    """The load in a second process for at most `seconds`, stopped when the block ends; its answers into out."""
    stop_file = Path(tempfile.mkdtemp(prefix="bench-uploads-")) / "stop"
    command = [sys.executable, "-m", "bench.uploads", "--load", "--port", str(port), "--rate", str(args.rate),
               "--seconds", str(seconds), "--stop-file", str(stop_file), "--timeout", str(args.timeout)]
    load = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        yield
    finally:
        stop_file.touch()
        stdout, _ = load.communicate(timeout=args.timeout + 30)
        shutil.rmtree(stop_file.parent)
    out.extend(Answer(due, latency) for due, latency in json.loads(stdout))


# The server and its data.


def records_store() -> str:
    """The SAE that is read, the model's hooks to upload to, and an API key; returns the key."""
    from django.contrib.auth.models import User

    from atlas.accounts.services import api_key_create
    from atlas.lms.models import LanguageModel
    from bench.api import features_store

    features_store(N_FEATURES)
    LanguageModel.objects.filter(slug=MODEL).update(
        hook_widths={f"blocks.{layer}.hook_resid_post": D_IN for layer in range(30)}
    )
    return api_key_create(user=User.objects.create_user("bench")).secret


def archive_write(directory: Path, limit_bytes: int) -> Path:
    """A .tar.gz of an SAELens SAE whose files add up to just under limit_bytes; random weights, as trained ones
    compress about as badly."""
    from safetensors.numpy import save_file

    d_sae = (limit_bytes - 64 * 1024) // (4 * (2 * D_IN + 1))
    rng = np.random.default_rng(0)
    sae = directory / "sae"
    sae.mkdir()
    cfg = {"architecture": "standard", "d_in": D_IN, "d_sae": d_sae, "dtype": "float32", "hook_name": HOOK}
    (sae / "cfg.json").write_text(json.dumps(cfg))
    save_file({"W_enc": rng.standard_normal((D_IN, d_sae), dtype=np.float32),
               "W_dec": rng.standard_normal((d_sae, D_IN), dtype=np.float32),
               "b_enc": np.zeros(d_sae, np.float32), "b_dec": np.zeros(D_IN, np.float32)},
              str(sae / "sae_weights.safetensors"))
    archive = directory / "sae.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as bundle:
        bundle.add(sae, "sae")
    shutil.rmtree(sae)
    return archive


def _wait_until_answering(port: int, server: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        answer = asyncio.run(_get(port, f"/api/feature/{MODEL}/{READ_SAE}/0", time.monotonic(), 5.0))
        if answer.latency_ms is not None:
            return
        time.sleep(0.5)
    raise RuntimeError(f"gunicorn did not answer on port {port} within {seconds:.0f} s")


@contextmanager
def gunicorn_serving(database_url: str, media: Path, limit_bytes: int, queue: str, sync: bool) -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "bench-uploads", "DEBUG": "false",
           "LOG_LEVEL": "WARNING", "ATLAS_MEDIA_ROOT": str(media), "ATLAS_MAX_UPLOAD_BYTES": str(limit_bytes),
           "ATLAS_GPU_QUEUE": queue, "TMPDIR": str(media)}
    threads = [] if sync else ["--worker-class", "gthread", "--threads", "4"]
    command = [sys.executable, "-m", "gunicorn", "atlas.wsgi", "--pythonpath", "platform", "--bind",
               f"{HOST}:{port}", "--workers", str(WORKERS), *threads, "--timeout", "600", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        _wait_until_answering(port, server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=60)


# The uploads.


def _multipart(archive: Path, slug: str, boundary: str) -> tuple[bytes, bytes]:
    fields = {"language_model": MODEL, "dataset": DATASET, "slug": slug, "n_sequences": "8"}
    head = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
                   for name, value in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="{archive.name}"\r\n'
             "Content-Type: application/gzip\r\n\r\n")
    return head.encode(), f"\r\n--{boundary}--\r\n".encode()


def upload(port: int, key: str, archive: Path, slug: str) -> UploadDone:
    """POST /api/upload of the archive, the file sent by sendfile; the status line of the answer."""
    boundary = uuid.uuid4().hex
    head, tail = _multipart(archive, slug, boundary)
    length = len(head) + archive.stat().st_size + len(tail)
    request = (f"POST /api/upload HTTP/1.1\r\nHost: {HOST}:{port}\r\nx-api-key: {key}\r\nConnection: close\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {length}\r\n\r\n")
    started = time.monotonic()
    with socket.create_connection((HOST, port)) as connection, archive.open("rb") as file:
        connection.sendall(request.encode() + head)
        connection.sendfile(file)
        connection.sendall(tail)
        sent = time.monotonic()
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = answer.split(b"\r\n", 1)[0].decode()
    if " 201 " not in status:
        status += " " + answer.split(b"\r\n\r\n", 1)[-1][:300].decode(errors="replace")
    return UploadDone(started, sent, time.monotonic(), status)


def uploads_concurrent(port: int, key: str, archive: Path, slugs: list[str]) -> list[UploadDone]:
    done: list[UploadDone] = []
    threads = [threading.Thread(target=lambda slug=slug: done.append(upload(port, key, archive, slug)))
               for slug in slugs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


# One measurement: idle, then during the uploads.


def _percentiles(answers: list[Answer]) -> tuple[float, float, int]:
    latencies = [answer.latency_ms for answer in answers if answer.latency_ms is not None]
    errors = len(answers) - len(latencies)
    if not latencies:
        return float("nan"), float("nan"), errors
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), errors


def measure(database_url: str, key: str, archive: Path, limit_bytes: int, args: argparse.Namespace,
            sync: bool, prefix: str) -> None:
    queue = f"bench-uploads-{uuid.uuid4().hex[:8]}"
    media = Path(tempfile.mkdtemp(prefix="bench-uploads-media-"))
    try:
        with gunicorn_serving(database_url, media, limit_bytes, queue, sync) as port:
            warmup: list[Answer] = []
            with load_running(port, args, WARMUP_SECONDS, warmup):
                time.sleep(WARMUP_SECONDS + 0.5)
            idle: list[Answer] = []
            with load_running(port, args, args.idle_seconds, idle):
                time.sleep(args.idle_seconds + 0.5)
            loaded: list[Answer] = []
            with load_running(port, args, 3600, loaded):
                time.sleep(0.5)
                done = uploads_concurrent(port, key, archive, [f"{prefix}upload-{n}" for n in range(2)])
    finally:
        shutil.rmtree(media, ignore_errors=True)
        _queue_drop(queue)
    start, end = min(d.started for d in done), max(d.ended for d in done)
    during = [answer for answer in loaded if start <= answer.due <= end]
    _report(prefix, sync, idle, during, done)


def _queue_drop(queue: str) -> None:
    """The run tasks the uploads queued, which no worker here takes."""
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL).delete(queue)


def _report(prefix: str, sync: bool, idle: list[Answer], during: list[Answer], done: list[UploadDone]) -> None:
    server = "sync workers" if sync else "gthread workers, 4 threads"
    idle_p50, idle_p99, idle_errors = _percentiles(idle)
    p50, p99, errors = _percentiles(during)
    for number, upload_done in enumerate(done):
        print(f"[{prefix or 'new'}] upload {number}: {upload_done.ended - upload_done.started:.1f} s "
              f"(body sent in {upload_done.sent - upload_done.started:.1f} s), {upload_done.status}")
    print(f"[{prefix or 'new'}] gunicorn {WORKERS} {server}: idle p50 {idle_p50:.1f} ms, p99 {idle_p99:.1f} ms "
          f"({len(idle)} requests, {idle_errors} errors); during uploads p50 {p50:.1f} ms, p99 {p99:.1f} ms "
          f"({len(during)} requests, {errors} errors)")
    print(f"RESULT {prefix}api_p50_idle_ms={idle_p50:.1f}")
    print(f"RESULT {prefix}api_p99_idle_ms={idle_p99:.1f}")
    print(f"RESULT {prefix}api_p50_during_uploads_ms={p50:.1f}")
    print(f"RESULT {prefix}api_p99_during_uploads_ms={p99:.1f}")
    print(f"RESULT {prefix}api_errors_during_uploads={errors}")
    print(f"RESULT {prefix}uploads_created={sum(' 201 ' in d.status for d in done)}")


def bench_main(args: argparse.Namespace) -> None:
    limit_bytes = args.unpacked_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="bench-uploads-"))
    try:
        started = time.perf_counter()
        archive = archive_write(work, limit_bytes)
        print(f"archive of {archive.stat().st_size / MIB:.0f} MiB unpacking to just under {args.unpacked_mib} MiB, "
              f"written in {time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs")
        with scratch_database(SCRATCH_DATABASE) as database_url:
            key = records_store()
            measure(database_url, key, archive, limit_bytes, args, sync=False, prefix="")
            if args.baseline:
                measure(database_url, key, archive, limit_bytes, args, sync=True, prefix="baseline_")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unpacked-mib", type=int, default=384,
                        help="ATLAS_MAX_UPLOAD_BYTES in MiB; each archive unpacks to just under it")
    parser.add_argument("--rate", type=float, default=50.0, help="GET /api/feature requests per second")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="length of the idle measurement")
    parser.add_argument("--baseline", action="store_true", help="measure with gunicorn's sync workers too")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a GET counts as an error")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        load_main(args)
    else:
        bench_main(args)


if __name__ == "__main__":
    main()
