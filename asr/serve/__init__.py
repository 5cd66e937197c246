"""`asr serve`: the toolkit behind HTTP, speaking OpenAI's audio API, with a web page at `/`.

    asr serve                                   # http://127.0.0.1:8000/, models from the registry
    asr serve --host 0.0.0.0 --port 9000 --model exp/train --workers 4
    ASR_API_KEY=secret asr serve                # then every /v1 call needs "Authorization: Bearer secret"

Endpoints (asr.serve.app): POST /v1/audio/transcriptions, POST /v1/audio/speech, GET /v1/models,
GET /v1/speakers, POST /v1/speakers/{enroll,identify,verify}, GET /health, the page at `/`, and
live transcription over a WebSocket, WS /v1/audio/transcriptions/live (a model that can stream:
--stream-model, or --model when it can).

This module holds only the command's arguments: the ASGI stack (Starlette, uvicorn) is imported
when the command runs, so `asr transcribe` does not pay for it at start-up.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

DEFAULT_PORT = 8000


def add_serve_command(subparsers) -> None:
    p = subparsers.add_parser("serve", help="HTTP server: OpenAI-compatible audio endpoints and a web page")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--model", default="digits", help="default transcription model (name, package or exp dir)")
    p.add_argument("--tts-model", default="digits-tts", help="default speech model")
    p.add_argument("--speaker-model", default="speaker", help="model of the speaker endpoints")
    p.add_argument("--speaker-db", default=None, help="enrollment database (default $ASR_HOME/speakers.json)")
    p.add_argument("--api-key", default=os.environ.get("ASR_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 (default: $ASR_API_KEY; the variable "
                        "keeps the key out of the process list)")
    p.add_argument("--workers", type=int, default=2, help="model worker threads (each holds its own models)")
    p.add_argument("--queue", type=int, default=16, help="requests waiting for a worker before new ones get 429")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait and run before 504")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest request body (413 above it)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--stream-model", default=None,
                   help="model of the live WebSocket (a unidirectional CTC package; default: --model if it can "
                        "stream, else the first registry model that can)")
    p.add_argument("--max-streams", type=int, default=8, help="open live sessions before new ones are refused")
    p.add_argument("--stream-idle-timeout", type=float, default=30.0,
                   help="seconds a live session may send nothing before it is closed")
    p.add_argument("--stream-max-seconds", type=float, default=3600.0, help="wall-clock limit of one live session")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(a) -> int:
    import uvicorn

    from .app import ServeConfig, create_app, uvicorn_config

    if a.workers < 1 or a.queue < 1 or a.max_streams < 1:
        raise ValueError("--workers, --queue and --max-streams must be >= 1")
    if min(a.timeout, a.max_upload_mb, a.stream_idle_timeout, a.stream_max_seconds) <= 0:
        raise ValueError("--timeout, --max-upload-mb, --stream-idle-timeout and --stream-max-seconds must be > 0")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    if not _is_loopback(a.host) and not a.api_key:
        print(f"asr serve: warning: listening on {a.host} without an API key: anyone who can reach this "
              "port can use the models and enroll speakers (set ASR_API_KEY)", file=sys.stderr)
    cfg = ServeConfig(model=a.model, tts_model=a.tts_model, speaker_model=a.speaker_model, speaker_db=a.speaker_db,
                      api_key=a.api_key or None, workers=a.workers, queue_size=a.queue, timeout=a.timeout,
                      max_upload_bytes=int(a.max_upload_mb * 2**20), stream_model=a.stream_model,
                      max_streams=a.max_streams, stream_idle_timeout=a.stream_idle_timeout,
                      stream_max_seconds=a.stream_max_seconds)
    app = create_app(cfg)
    uvicorn.Server(uvicorn_config(app, a.host, a.port, a.log_level)).run()
    return 0
