"""The ASGI application behind `asr serve` (Starlette on uvicorn; multipart by python-multipart).

OpenAI's audio API, so its clients work unchanged:
    POST /v1/audio/transcriptions   multipart `file`, `model`, `response_format` (json, text, srt, vtt,
                                    verbose_json), `timestamp_granularities[]` (word, segment)
    POST /v1/audio/speech           JSON `input`, `model`, `voice` (a speaker of the model),
                                    `response_format` (mp3 (OpenAI's default), wav, flac, opus, pcm)
    GET  /v1/models, /v1/models/{id}
and the toolkit's own:
    GET  /v1/speakers                       the enrolled speakers
    POST /v1/speakers/enroll                multipart `name`, one or more `file`, `replace`
    POST /v1/speakers/identify              multipart one or more `file`, `threshold`
    POST /v1/speakers/verify                multipart two `file`s, `threshold`
    GET  /health, GET / (the web page, from ./static)
Errors are JSON in OpenAI's shape, {"error": {"message", "type", "param", "code"}}.

The model work runs on a fixed pool of worker threads, never on the event loop and never on a
thread per request: a request waits in a bounded queue (429 when it is full) for at most
`timeout` seconds, queue and work together (504 after that).
"""
from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import queue
import re
import threading
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import speaker as spk
from .. import __version__
from ..audio import AudioError, load_audio, resample
from ..pretrained import PackageError, load_model, read_header, registry, resolve
from ..synthesize import synthesize
from ..transcribe import Transcriber, Transcript, cues, format_transcript

log = logging.getLogger("asr.serve")
STATIC = Path(__file__).parent / "static"

TASKS = {"ctc": "transcription", "ctc-ensemble": "transcription", "tts": "speech", "speaker": "speaker"}
TRANSCRIPTION_FORMATS = ["json", "text", "srt", "vtt", "verbose_json"]
# name -> (soundfile format, subtype, media type); "pcm" is raw 16-bit little-endian at 24 kHz, as
# OpenAI's is, so a client that plays it at OpenAI's rate plays it at the right speed.
SPEECH_FORMATS = {"mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg"), "wav": ("WAV", "PCM_16", "audio/wav"),
                  "flac": ("FLAC", "PCM_16", "audio/flac"), "opus": ("OGG", "OPUS", "audio/ogg"),
                  "pcm": (None, None, "audio/pcm")}
PCM_RATE = 24000


@dataclass
class ServeConfig:
    model: str = "digits"  # the defaults of each task, when a request names no model
    tts_model: str = "digits-tts"
    speaker_model: str = "speaker"
    speaker_db: str | None = None  # None: $ASR_HOME/speakers.json
    api_key: str | None = None
    workers: int = 2
    queue_size: int = 16
    timeout: float = 120.0
    max_upload_bytes: int = 25 * 2**20  # OpenAI's own limit for audio uploads
    max_input_chars: int = 4096  # OpenAI's limit for speech input


# -- errors ------------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered as {"error": {...}} with its HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _as_api_error(e: Exception) -> ApiError:
    """What the library raises, as the client should see it."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, AudioError):
        return ApiError(400, str(e), param="file", code="invalid_audio")
    if isinstance(e, PackageError):  # a model the server lists but cannot load: the server's fault
        return ApiError(500, str(e), type="server_error", code="model_unavailable")
    if isinstance(e, ValueError):  # the library's way of saying the input is wrong, naming the field
        return ApiError(400, str(e))
    log.exception("internal error", exc_info=e)
    return ApiError(500, f"internal error ({type(e).__name__}); the server log has the traceback", type="server_error")


async def _api_error(request, e: Exception) -> Response:
    return _as_api_error(e).response()


async def _http_error(request, e: HTTPException) -> Response:
    return ApiError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None,
                    headers=getattr(e, "headers", None)).response()


# -- the worker pool ---------------------------------------------------------------------------

class QueueFull(Exception):
    pass


# synthesize() seeds torch's process-wide generator (fork_rng) so that a seed gives the same audio;
# whatever else draws from that generator on another worker meanwhile (another synthesis, a model
# being built) would shift its stream and change its audio. Everything that draws takes this lock.
GLOBAL_RNG = threading.Lock()


class WorkerModels:
    """One worker's own copies of the models it has used. Model objects are not shared between
    threads: neither torch nor the beam decoder promises that concurrent calls into one object are
    safe, and a copy of the three embedded models is about 25 MB."""

    def __init__(self):
        self._models: dict[str, object] = {}
        self._transcribers: dict[str, Transcriber] = {}

    def get(self, name: str):
        if name not in self._models:
            with GLOBAL_RNG:  # building a model draws its initial weights before the package's replace them
                self._models[name] = load_model(name)
        return self._models[name]

    def transcriber(self, name: str) -> Transcriber:
        if name not in self._transcribers:
            self._transcribers[name] = Transcriber(self.get(name))
        return self._transcribers[name]


class WorkerPool:
    """`workers` threads taking jobs from a queue of at most `queue_size` waiting jobs; each thread
    loads `preload` before it takes its first job."""

    def __init__(self, workers: int, queue_size: int, preload: tuple[str, ...] = ()):
        if workers < 1 or queue_size < 1:  # queue.Queue(0) would be unbounded
            raise ValueError(f"a worker pool needs workers >= 1 and queue_size >= 1, got {workers}, {queue_size}")
        self._jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.running = 0
        self.ready = 0
        self._preload = preload
        self._threads = [threading.Thread(target=self._run, name=f"asr-serve-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def workers(self) -> int:
        return len(self._threads)

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def submit(self, fn, *args) -> Future:
        """Queue fn(worker_models, *args); raises QueueFull when the waiting room is full."""
        fut: Future = Future()
        try:
            self._jobs.put_nowait((fut, fn, args))
        except queue.Full:
            raise QueueFull from None
        return fut

    def _run(self) -> None:
        models = WorkerModels()
        for name in self._preload:  # so the first requests do not pay for loading
            try:
                models.get(name)
            except Exception as e:  # the request that needs it will say so
                log.warning("preloading %s failed: %s", name, e)
        with self._lock:
            self.ready += 1
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():  # its request timed out while it waited
                continue
            with self._lock:
                self.running += 1
            try:
                fut.set_result(fn(models, *args))
            except BaseException as e:
                fut.set_exception(e)
            finally:
                with self._lock:
                    self.running -= 1

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)


async def run_job(request: Request, fn, *args):
    """fn(worker_models, *args) on the pool, within the request's time limit."""
    state = request.app.state
    try:
        fut = state.pool.submit(fn, *args)
    except QueueFull:
        raise ApiError(429, f"server busy: {state.pool.workers} worker(s) busy and {state.cfg.queue_size} request(s) "
                       "waiting; retry later", type="rate_limit_error", code="queue_full",
                       headers={"Retry-After": "1"}) from None
    try:
        # a request that times out while still queued is cancelled (the worker skips it); one
        # already running finishes on its worker and its result is dropped
        return await asyncio.wait_for(asyncio.wrap_future(fut), state.cfg.timeout)
    except asyncio.TimeoutError:
        raise ApiError(504, f"request took longer than the server's limit of {state.cfg.timeout:g} s",
                       type="timeout_error", code="timeout") from None


# -- the models it serves ----------------------------------------------------------------------

def catalogue(cfg: ServeConfig) -> dict[str, dict]:
    """name -> {arch, task, voices, ...} for every registry model and the configured ones. Only
    these names are accepted: a request never makes the server open a path or fetch a URL."""
    reg = registry()
    out = {}
    for name in [*sorted(reg), cfg.model, cfg.tts_model, cfg.speaker_model]:
        if name in out:
            continue
        entry = reg.get(name, {})
        item = {"arch": entry.get("arch"), "result": entry.get("result", ""), "data": entry.get("data", "")}
        if "url" not in entry:  # a local package: its header says what it is (no weights read)
            meta = read_header(resolve(name))
            item["arch"] = meta["arch"]
            if meta["arch"] == "tts":
                item["voices"] = json.loads(meta["model_meta"]).get("speakers", [])
        item["task"] = TASKS.get(item["arch"], "unknown")
        out[name] = item
    for name, task in [(cfg.model, "transcription"), (cfg.tts_model, "speech"), (cfg.speaker_model, "speaker")]:
        if out[name]["task"] != task:
            raise ValueError(f"{name}: a {out[name]['arch']} model, not a {task} model")
        out[name]["default"] = True
    return out


def _model_name(request: Request, name, task: str) -> str:
    state = request.app.state
    cfg = state.cfg
    name = name or {"transcription": cfg.model, "speech": cfg.tts_model, "speaker": cfg.speaker_model}[task]
    if not isinstance(name, str) or name not in state.models:
        raise ApiError(404, f"The model {name!r} does not exist here; GET /v1/models lists them "
                       f"({', '.join(n for n, m in state.models.items() if m['task'] == task)} for {task})",
                       param="model", code="model_not_found")
    if state.models[name]["task"] != task:
        raise ApiError(400, f"{name}: a {state.models[name]['arch']} model cannot do {task}", param="model",
                       code="wrong_model_task")
    return name


# -- request parsing ---------------------------------------------------------------------------

async def _form(request: Request) -> FormData:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "expected a multipart/form-data body (fields and a `file`)")
    return await request.form(max_files=32, max_fields=64)


def _uploads(form: FormData, field: str = "file") -> list[UploadFile]:
    files = [f for f in form.getlist(field) if isinstance(f, UploadFile)]
    if not files:
        raise ApiError(400, f"`{field}` is missing: send the audio as a multipart file field named {field!r}",
                       param=field)
    return files


def _float_field(form, field: str) -> float | None:
    value = form.get(field)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"`{field}` must be a number, got {value!r}", param=field) from None


async def _read_audio(uploads: list[UploadFile]) -> list[tuple[str, bytes]]:
    return [(u.filename or "upload", await u.read()) for u in uploads]


def _decode(upload: tuple[str, bytes], sample_rate: int) -> np.ndarray:
    name, data = upload
    if not data:
        raise AudioError(f"uploaded file {name!r}: empty (0 bytes)")
    try:
        return load_audio(data, sample_rate)[0]
    except AudioError as e:  # load_audio calls bytes "<bytes>" (libsndfile: a BytesIO repr): name the upload
        message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "it", str(e))
        raise AudioError(message.replace("<bytes>", f"uploaded file {name!r}", 1)) from None


# -- transcription -----------------------------------------------------------------------------

def _transcribe(models: WorkerModels, name: str, upload: tuple[str, bytes]) -> Transcript:
    tr = models.transcriber(name)
    return tr.transcribe_arrays([(upload[0], _decode(upload, tr.sr))])[0]


def verbose_json(t: Transcript, granularities: list[str]) -> dict:
    """OpenAI's verbose_json: segments (subtitle cues: words grouped at pauses), and words when
    asked for; a confidence where Whisper gives log-probabilities."""
    out = {"task": "transcribe", "duration": t.duration, "text": t.text,
           "segments": [{"id": i, "start": cue[0].start, "end": cue[-1].end, "text": " ".join(w.word for w in cue),
                         "confidence": round(sum(w.confidence for w in cue) / len(cue), 4)}
                        for i, cue in enumerate(cues(t))]}
    if "word" in granularities:
        out["words"] = [{"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence} for w in t.words]
    return out


async def transcriptions(request: Request) -> Response:
    form = await _form(request)
    upload = _uploads(form)[0]
    name = _model_name(request, form.get("model"), "transcription")
    fmt = form.get("response_format") or "json"
    if fmt not in TRANSCRIPTION_FORMATS:
        raise ApiError(400, f"response_format {fmt!r} is not one of {TRANSCRIPTION_FORMATS}", param="response_format")
    granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    bad = sorted(set(granularities) - {"word", "segment"})
    if bad:
        raise ApiError(400, f"timestamp_granularities[]: {bad} not among ['segment', 'word']",
                       param="timestamp_granularities")
    if granularities and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities[] needs response_format verbose_json",
                       param="timestamp_granularities")
    if str(form.get("stream", "")).lower() in ("true", "1"):
        raise ApiError(400, "streaming transcription is not supported by this server", param="stream")
    t = await run_job(request, _transcribe, name, (await _read_audio([upload]))[0])
    if fmt == "json":
        return JSONResponse({"text": t.text})
    if fmt == "verbose_json":
        return JSONResponse(verbose_json(t, granularities))
    if fmt == "text":
        return PlainTextResponse(t.text + "\n")
    return PlainTextResponse(format_transcript(t, fmt), media_type="text/vtt" if fmt == "vtt" else "text/plain")


# -- speech ------------------------------------------------------------------------------------

def _speak(models: WorkerModels, name: str, text: str, voice: str | None):
    model = models.get(name)
    try:
        model.prepare_text(text)
    except ValueError as e:
        raise ApiError(400, f"input: {e}", param="input") from None
    with GLOBAL_RNG:
        s = synthesize(model, text, voice)
    return s.wav, s.sample_rate, s.stopped


def encode_audio(wav: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    container, subtype, _ = SPEECH_FORMATS[fmt]
    if container is None:  # pcm
        x = resample(np.asarray(wav, dtype=np.float32), sample_rate, PCM_RATE)
        return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    sf.write(buf, np.asarray(wav, dtype=np.float32), sample_rate, format=container, subtype=subtype)
    return buf.getvalue()


async def speech(request: Request) -> Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "expected a JSON body: {\"model\", \"input\", \"voice\"}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object: {\"model\", \"input\", \"voice\"}")
    cfg = request.app.state.cfg
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "`input` must be a non-empty string: the text to say", param="input")
    if len(text) > cfg.max_input_chars:
        raise ApiError(400, f"`input` has {len(text)} characters, more than {cfg.max_input_chars}", param="input")
    name = _model_name(request, body.get("model"), "speech")
    voices = request.app.state.models[name].get("voices")
    voice = body.get("voice")
    if voice is not None and voices is not None and voice not in voices:
        raise ApiError(400, f"voice {voice!r}: {name} speaks as {', '.join(voices)}", param="voice",
                       code="unknown_voice")
    fmt = body.get("response_format") or "mp3"
    if fmt not in SPEECH_FORMATS:
        raise ApiError(400, f"response_format {fmt!r} is not one of {list(SPEECH_FORMATS)}", param="response_format")
    if body.get("speed") not in (None, 1, 1.0):
        raise ApiError(400, "speed: only 1.0 is supported", param="speed")
    if body.get("stream_format") not in (None, "audio"):
        raise ApiError(400, "stream_format: only 'audio' (the whole file) is supported", param="stream_format")
    wav, sr, stopped = await run_job(request, _speak, name, text, voice)
    headers = {"X-Sample-Rate": str(PCM_RATE if fmt == "pcm" else sr)}
    if not stopped:  # the stop token never fired: the audio was cut at the decoder's step limit
        headers["X-Asr-Cut"] = "true"
    return Response(encode_audio(wav, sr, fmt), media_type=SPEECH_FORMATS[fmt][2], headers=headers)


# -- speakers ----------------------------------------------------------------------------------

def _embed(models: WorkerModels, name: str, uploads: list[tuple[str, bytes]]):
    model = models.get(name)
    sr = model.cfg.features.sample_rate
    return model, spk.embed_arrays(model, [_decode(u, sr) for u in uploads])


def _enroll(models, name, speaker, uploads, replace, db_path, db_lock):
    spk.check_name(speaker)
    model = models.get(name)
    sr = model.cfg.features.sample_rate
    clips = [(f"upload:{n}", _decode((n, data), sr)) for n, data in uploads]
    # the same checks as `asr speaker enroll` (speech, duplicates), under the database's file lock
    with db_lock:
        db = spk.enroll(model, speaker, clips, db_path, replace)
    return {"name": speaker, "count": db.speakers[speaker].count, "speakers": sorted(db.speakers)}


def _identify(models, name, uploads, threshold, db_path):
    model, emb = _embed(models, name, uploads)
    results = spk.identify_embeddings(model, spk.SpeakerDB.load(db_path), emb, threshold)
    return [{"file": file, **r} for (file, _), r in zip(uploads, results)]


def _verify(models, name, uploads, threshold):
    model, emb = _embed(models, name, uploads)
    return spk.verify_embeddings(model, emb[0], emb[1], threshold)


def _db_path(request: Request):
    return request.app.state.cfg.speaker_db


async def speakers(request: Request) -> Response:
    db = spk.SpeakerDB.load(_db_path(request))
    enrolled_by = (db.model or {}).get("name")  # a path on the server: its file name is enough
    return JSONResponse({"object": "list", "model": Path(enrolled_by).name if enrolled_by else None,
                         "data": [{"name": n, "count": e.count} for n, e in sorted(db.speakers.items())]})


async def enroll(request: Request) -> Response:
    form = await _form(request)
    speaker = form.get("name")
    if not isinstance(speaker, str) or not speaker:
        raise ApiError(400, "`name` is missing: the speaker to enroll", param="name")
    uploads = await _read_audio(_uploads(form))
    name = _model_name(request, form.get("model"), "speaker")
    replace = str(form.get("replace", "")).lower() in ("true", "1", "on")
    return JSONResponse(await run_job(request, _enroll, name, speaker, uploads, replace, _db_path(request),
                                      request.app.state.db_lock))


async def identify(request: Request) -> Response:
    form = await _form(request)
    uploads = await _read_audio(_uploads(form))
    name = _model_name(request, form.get("model"), "speaker")
    results = await run_job(request, _identify, name, uploads, _float_field(form, "threshold"), _db_path(request))
    return JSONResponse(results[0] if len(results) == 1 else {"object": "list", "data": results})


async def verify(request: Request) -> Response:
    form = await _form(request)
    uploads = _uploads(form)
    if len(uploads) != 2:
        raise ApiError(400, f"verify compares two recordings: send two `file` fields, got {len(uploads)}", param="file")
    name = _model_name(request, form.get("model"), "speaker")
    threshold = _float_field(form, "threshold")
    return JSONResponse(await run_job(request, _verify, name, await _read_audio(uploads), threshold))


# -- models, health, page ----------------------------------------------------------------------

def _model_object(name: str, item: dict) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "asr", **item}


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list",
                         "data": [_model_object(n, m) for n, m in request.app.state.models.items()]})


async def model(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in request.app.state.models:
        raise ApiError(404, f"The model {name!r} does not exist here", param="model", code="model_not_found")
    return JSONResponse(_model_object(name, request.app.state.models[name]))


async def health(request: Request) -> Response:
    pool = request.app.state.pool
    return JSONResponse({"status": "ok", "version": __version__, "workers": pool.workers, "ready": pool.ready,
                         "running": pool.running, "queued": pool.queued, "auth": bool(request.app.state.cfg.api_key)})


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


# -- limits at the door ------------------------------------------------------------------------

class Gate:
    """ASGI middleware: the API key on /v1 (compared in constant time) and the body size limit,
    from Content-Length before anything is read, and by counting for a chunked body."""

    def __init__(self, app, cfg: ServeConfig):
        self.app, self.cfg = app, cfg
        self.expected = f"Bearer {cfg.api_key}".encode() if cfg.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"].startswith("/v1/"):
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                return await ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                      code="invalid_api_key").response()(scope, receive, send)
        limit = self.cfg.max_upload_bytes
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._too_large(int(declared)).response()(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # raised inside the handler's body read: the error handler answers it
                raise self._too_large(seen, "at least ")
            return message

        return await self.app(scope, counted, send)

    def _too_large(self, size: int, prefix: str = "") -> ApiError:
        return ApiError(413, f"request body of {prefix}{size} bytes is larger than this server's limit of "
                        f"{self.cfg.max_upload_bytes} bytes", code="file_too_large")


# -- the application ---------------------------------------------------------------------------

def create_app(cfg: ServeConfig) -> Starlette:
    """The application; its worker threads start here and stop when the app shuts down."""
    state_models = catalogue(cfg)  # a bad --model fails here, before the port opens
    routes = [
        Route("/", page),
        Route("/health", health),
        Route("/v1/models", models),
        Route("/v1/models/{name:path}", model),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", speech, methods=["POST"]),
        Route("/v1/speakers", speakers),
        Route("/v1/speakers/enroll", enroll, methods=["POST"]),
        Route("/v1/speakers/identify", identify, methods=["POST"]),
        Route("/v1/speakers/verify", verify, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    pool = WorkerPool(cfg.workers, cfg.queue_size, preload=(cfg.model,))

    @asynccontextmanager
    async def lifespan(app):
        yield
        pool.close()

    # ApiError and ValueError (AudioError, PackageError) by name: an `Exception` handler alone runs
    # in Starlette's outermost layer, which logs a traceback for every 4xx
    handlers = {ApiError: _api_error, ValueError: _api_error, HTTPException: _http_error, Exception: _api_error}
    app = Starlette(routes=routes, middleware=[Middleware(Gate, cfg=cfg)], lifespan=lifespan,
                    exception_handlers=handlers)
    app.state.cfg, app.state.models, app.state.pool = cfg, state_models, pool
    app.state.db_lock = threading.Lock()
    return app


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """uvicorn's settings for `app`. limit_concurrency caps open connections and tasks (each holds
    its request body), beyond what the pool queues: past it uvicorn answers 503 at once."""
    import uvicorn

    cfg = app.state.cfg
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          limit_concurrency=4 * (cfg.workers + cfg.queue_size) + 32, timeout_keep_alive=5)
