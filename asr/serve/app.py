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
    WS   /v1/audio/transcriptions/live      live transcription of raw 16-bit PCM (see `live`)
Errors are JSON in OpenAI's shape, {"error": {"message", "type", "param", "code"}}.

The model work runs on a fixed pool of worker threads, never on the event loop and never on a
thread per request: a request waits in a bounded queue (429 when it is full) for at most
`timeout` seconds, queue and work together (504 after that); a transcription that times out
while running stops before its next batch of segments.
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
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from .. import __version__
from .. import speaker_db as spk
from ..audio import AudioError, load_audio, resample
from ..config import load_config
from ..package import PackageError, read_header
from ..registry import load_model, registry, resolve
from ..speaker_embed import embed_arrays
from ..streaming import Stream, file_header, pcm16, streaming_problem
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
    # live transcription (WS /v1/audio/transcriptions/live)
    stream_model: str | None = None  # None: `model` when it can stream, else the first registry model that can
    max_streams: int = 8  # open live sessions; more are refused (each holds a stream's state)
    stream_idle_timeout: float = 30.0  # seconds without a message before a session is closed
    stream_max_seconds: float = 3600.0  # wall-clock length of one session
    max_message_bytes: int = 2**20  # one WebSocket message (32 s of 16 kHz PCM); uvicorn closes with 1009 above


# -- errors ------------------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered as {"error": {...}} with its HTTP status."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def response_body(self) -> dict:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.response_body()}, status_code=self.status, headers=self.headers)


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


class Abandoned(Exception):
    """Raised inside a job whose request gave up on it (timed out): its worker stops there."""


class Job(Future):
    """A queued call and the flag its request raises when it stops waiting for the result."""

    def __init__(self, fn, args):
        super().__init__()
        self.fn, self.args = fn, args
        self.abandoned = threading.Event()

    def abandon(self) -> None:
        """A queued job is skipped; a running one stops at its next `stop_if_abandoned`."""
        self.cancel()
        self.abandoned.set()


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
        self.job: Job | None = None  # the job this worker runs now

    def stop_if_abandoned(self) -> None:
        """Where a long job can stop cleanly (between batches): stop if its request has given up."""
        if self.job is not None and self.job.abandoned.is_set():
            raise Abandoned

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

    def submit(self, fn, *args) -> Job:
        """Queue fn(worker_models, *args); raises QueueFull when the waiting room is full."""
        job = Job(fn, args)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job

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
            if not job.set_running_or_notify_cancel():  # its request timed out while it waited
                continue
            with self._lock:
                self.running += 1
            models.job = job
            try:
                job.set_result(job.fn(models, *job.args))
            except Abandoned as e:
                log.info("stopped a job its request gave up on (%s)", getattr(job.fn, "__name__", "job"))
                job.set_exception(e)
            except BaseException as e:
                job.set_exception(e)
            finally:
                models.job = None
                with self._lock:
                    self.running -= 1

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(timeout=30)


async def run_job(conn, fn, *args, wait_for_room: bool = False):
    """fn(worker_models, *args) on the pool, within the request's time limit. conn: the Request
    or WebSocket. wait_for_room: wait (within the limit) while the queue is full instead of 429,
    for a live session's next chunk, which would otherwise end the session."""
    state = conn.app.state
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.cfg.timeout
    while True:
        try:
            job = state.pool.submit(fn, *args)
            break
        except QueueFull:
            if not wait_for_room:
                raise ApiError(429, f"server busy: {state.pool.workers} worker(s) busy and {state.cfg.queue_size} "
                               "request(s) waiting; retry later", type="rate_limit_error", code="queue_full",
                               headers={"Retry-After": "1"}) from None
            if loop.time() > deadline:
                raise _timeout(state.cfg) from None
            await asyncio.sleep(0.02)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(job), max(0.0, deadline - loop.time()))
    except asyncio.TimeoutError:
        # still queued: the worker skips it; running: it stops at its next stop point (a
        # transcription's next batch), or else finishes and its result is dropped
        job.abandon()
        raise _timeout(state.cfg) from None


def _timeout(cfg: ServeConfig) -> ApiError:
    return ApiError(504, f"request took longer than the server's limit of {cfg.timeout:g} s",
                    type="timeout_error", code="timeout")


# -- the models it serves ----------------------------------------------------------------------

def catalogue(cfg: ServeConfig) -> dict[str, dict]:
    """name -> {arch, task, voices, ...} for every registry model and the configured ones. Only
    these names are accepted: a request never makes the server open a path or fetch a URL."""
    reg = registry()
    out = {}
    for name in [*sorted(reg), cfg.model, cfg.tts_model, cfg.speaker_model, *filter(None, [cfg.stream_model])]:
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
        if item["task"] == "transcription":
            item["streaming"] = why_not_streaming(name, entry) is None  # WS /v1/audio/transcriptions/live takes it
        out[name] = item
    for name, task in [(cfg.model, "transcription"), (cfg.tts_model, "speech"), (cfg.speaker_model, "speaker")]:
        if out[name]["task"] != task:
            raise ValueError(f"{name}: a {out[name]['arch']} model, not a {task} model")
        out[name]["default"] = True
    return out


def why_not_streaming(name: str, registry_entry: dict) -> str | None:
    """Why this transcription model cannot stream, from its header (None: it can)."""
    if "url" in registry_entry:
        return "not downloaded yet: its header is not here to say"
    meta = read_header(resolve(name))
    cfg = load_config(data=json.loads(meta["config"])) if meta["arch"] == "ctc" else None  # the arch says enough
    return streaming_problem(meta["arch"], cfg)


def default_stream_model(cfg: ServeConfig, models: dict[str, dict]) -> str | None:
    """The live sessions' model when the client names none: --stream-model, which must stream,
    else --model when it streams, else the first registry model that does (None: none does)."""
    if cfg.stream_model is not None:
        if not models[cfg.stream_model].get("streaming"):
            why = why_not_streaming(cfg.stream_model, registry().get(cfg.stream_model, {})) or "not a CTC model"
            raise ValueError(f"--stream-model {cfg.stream_model}: cannot stream: {why}")
        return cfg.stream_model
    if models[cfg.model].get("streaming"):
        return cfg.model
    return next((n for n, m in models.items() if m.get("streaming")), None)


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
    return tr.transcribe_arrays([(upload[0], _decode(upload, tr.sr))], between_batches=models.stop_if_abandoned)[0]


def _word(w) -> dict:
    return {"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence}


def verbose_json(t: Transcript, granularities: list[str]) -> dict:
    """OpenAI's verbose_json: segments (subtitle cues: words grouped at pauses), and words when
    asked for; a confidence where Whisper gives log-probabilities."""
    out = {"task": "transcribe", "duration": t.duration, "text": t.text,
           "segments": [{"id": i, "start": cue[0].start, "end": cue[-1].end, "text": " ".join(w.word for w in cue),
                         "confidence": round(sum(w.confidence for w in cue) / len(cue), 4)}
                        for i, cue in enumerate(cues(t))]}
    if "word" in granularities:
        out["words"] = [_word(w) for w in t.words]
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
        raise ApiError(400, "stream=true (server-sent events) is not supported; live transcription is the "
                       "WebSocket /v1/audio/transcriptions/live", param="stream")
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
    return model, embed_arrays(model, [_decode(u, sr) for u in uploads])


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


# -- live transcription ------------------------------------------------------------------------

LIVE_RATES = (8000, 192000)  # Hz: telephone speech to studio audio
START_FIELDS = {"type", "model", "sample_rate", "api_key"}


def _stream_open(models: WorkerModels, name: str, sample_rate: int | None):
    return Stream(models.get(name), sample_rate=sample_rate)  # StreamError (a ValueError) says why it cannot


def _stream_step(models: WorkerModels, name: str, stream, samples: np.ndarray | None):
    """The next chunk (None: the end) on this worker's copy of the model."""
    stream.rebind(models.get(name))
    return stream.finish() if samples is None else stream.feed(samples)


def _close_code(e: ApiError) -> int:
    """WebSocket close codes 4000-4999 are the application's: 4000 + the HTTP status."""
    return 4000 + e.status


class LiveSession:
    """One WebSocket of `live`: its limits (idle, overall), its stream, and what it has said."""

    def __init__(self, ws: WebSocket):
        self.ws, self.state, self.cfg = ws, ws.app.state, ws.app.state.cfg
        self.loop = asyncio.get_running_loop()
        self.ends = self.loop.time() + self.cfg.stream_max_seconds
        self.binary = 0  # binary messages so far, to name a bad one
        self.words: list[str] = []  # the final words: bounded, as the session's length is
        self.partial = ""
        self.name = self.stream = self.rate = None  # set by the start message

    async def receive(self) -> dict:
        """The next message, as text (parsed JSON) or bytes, within the idle and overall limits."""
        left = self.ends - self.loop.time()
        idle = self.cfg.stream_idle_timeout
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            message = await asyncio.wait_for(self.ws.receive(), min(idle, left))
        except asyncio.TimeoutError:
            if left <= idle:
                raise ApiError(408, f"the session reached this server's limit of {self.cfg.stream_max_seconds:g} s; "
                               "open a new one", type="timeout_error", code="session_too_long") from None
            raise ApiError(408, f"nothing received for {idle:g} s: send audio, or {{\"type\": \"end\"}} to finish",
                           type="timeout_error", code="idle_timeout") from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            return {"bytes": message["bytes"]}
        try:
            parsed = json.loads(message.get("text") or "")
        except json.JSONDecodeError:
            raise ApiError(400, f"text message {message.get('text', '')[:40]!r}: not JSON; audio goes in binary "
                           "messages, control as JSON ({\"type\": \"start\"} or {\"type\": \"end\"})",
                           code="invalid_message") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
            raise ApiError(400, "a text message is a JSON object with a \"type\" (\"start\" or \"end\")",
                           param="type", code="invalid_message")
        return parsed

    def samples(self, data: bytes) -> np.ndarray:
        self.binary += 1
        header = file_header(data) if self.binary == 1 else None
        if header:
            rate = f" at {int.from_bytes(data[24:28], 'little')} Hz" if header == "RIFF" and len(data) >= 28 else ""
            raise ApiError(400, f"binary message 1 starts with a {header!r} header: an audio file{rate}, not raw "
                           "PCM; send its samples as 16-bit little-endian mono, their rate in the start message's "
                           f"sample_rate (this session: {self.rate} Hz)", param="sample_rate", code="invalid_audio")
        if len(data) % 2:
            raise ApiError(400, f"binary message {self.binary}: {len(data)} bytes, not a whole number of 16-bit "
                           "samples (raw PCM is 2 bytes a sample, little-endian, mono)", code="invalid_audio")
        return pcm16(data)

    def authorized(self, start: dict) -> bool:
        """The key from the Authorization header, or the start message's api_key (a browser's
        WebSocket cannot set headers), compared in constant time."""
        if not self.cfg.api_key:
            return True
        expected = f"Bearer {self.cfg.api_key}".encode()
        header = self.ws.headers.get("authorization", "").encode()
        given = start.get("api_key")
        from_message = f"Bearer {given}".encode() if isinstance(given, str) else b""
        return hmac.compare_digest(header, expected) or hmac.compare_digest(from_message, expected)

    async def start(self) -> str:
        start = await self.receive()
        if start.get("type") != "start":
            raise ApiError(400, "the first message is {\"type\": \"start\", \"model\": ..., \"sample_rate\": ...}, "
                           f"got {'binary audio' if 'bytes' in start else repr(start.get('type'))}",
                           param="type", code="invalid_message")
        if not self.authorized(start):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY', or \"api_key\" in "
                           "the start message", code="invalid_api_key")
        unknown = sorted(set(start) - START_FIELDS)
        if unknown:
            raise ApiError(400, f"start message: unknown field(s) {unknown}; it takes {sorted(START_FIELDS)}",
                           param=unknown[0], code="invalid_message")
        rate = start.get("sample_rate")
        if isinstance(rate, float) and rate.is_integer():
            rate = int(rate)
        if rate is not None and (type(rate) is not int or not LIVE_RATES[0] <= rate <= LIVE_RATES[1]):
            raise ApiError(400, f"sample_rate: {rate!r} is not a rate in Hz from {LIVE_RATES[0]} to {LIVE_RATES[1]} "
                           "(the rate of the 16-bit PCM this session will send)", param="sample_rate",
                           code="invalid_sample_rate")
        name = start.get("model") or self.state.stream_model
        if name is None:
            raise ApiError(400, "this server has no model that can stream (a unidirectional CTC model); start it "
                           "with --stream-model PACKAGE", param="model", code="no_streaming_model")
        name = _model_name(self.ws, name, "transcription")
        self.name = name
        self.stream = await run_job(self.ws, _stream_open, name, rate, wait_for_room=True)
        self.rate = self.stream.input_sr
        await self.ws.send_json({"type": "ready", "model": name, "sample_rate": self.rate,
                                 "model_sample_rate": self.stream.sr})
        return name

    async def step(self, samples: np.ndarray | None) -> None:
        u = await run_job(self.ws, _stream_step, self.name, self.stream, samples, wait_for_room=True)
        if u.final:
            self.words += [w.word for w in u.final]
            await self.ws.send_json({"type": "final", "text": " ".join(w.word for w in u.final),
                                     "words": [_word(w) for w in u.final], "time": u.time})
        if u.partial != self.partial:
            self.partial = u.partial
            await self.ws.send_json({"type": "partial", "text": u.partial, "time": u.time})
        if samples is None:
            await self.ws.send_json({"type": "done", "text": " ".join(self.words), "duration": u.time})

    async def run(self) -> None:
        await self.start()
        while True:
            message = await self.receive()
            if "bytes" in message:
                if message["bytes"]:
                    await self.step(self.samples(message["bytes"]))
            elif message["type"] == "end":
                await self.step(None)
                return
            else:
                raise ApiError(400, f"message type {message['type']!r}: after the start, send binary audio or "
                               "{\"type\": \"end\"}", param="type", code="invalid_message")


async def live(ws: WebSocket) -> None:
    """WS /v1/audio/transcriptions/live: words while the audio is still arriving.

    client: {"type": "start", "model"?, "sample_rate"? (Hz of what it sends; the model's if not
            given), "api_key"? (when the Authorization header cannot be set)}, then binary
            messages of raw 16-bit little-endian mono PCM of any length, then {"type": "end"}
    server: {"type": "ready", "model", "sample_rate", "model_sample_rate"}, then as they come
            {"type": "final", "text", "words": [{"word", "start", "end", "confidence"}], "time"}
            (words that will not change) and {"type": "partial", "text", "time"} (the guess at
            the word being said, when it changes; "" once it is final), and after the end
            {"type": "done", "text", "duration"}, then the close (1000).
    An error is {"type": "error", "error": {OpenAI's error fields}} and then a close with code
    4000 + its HTTP status (4400 bad input, 4401 key, 4404 model, 4408 idle or too long, 4429
    too many sessions, 4500, 4504 a chunk over --timeout). One chunk is on a worker at a time, so
    a session holds one stream's state and one message; uvicorn's ws_max_size bounds a message.
    """
    state = ws.app.state
    await ws.accept()
    try:
        if state.live_sessions >= state.cfg.max_streams:
            raise ApiError(429, f"{state.live_sessions} live session(s) open, this server's limit; retry later",
                           type="rate_limit_error", code="too_many_sessions")
        state.live_sessions += 1  # one event loop: no lock
        try:
            await LiveSession(ws).run()
        finally:
            state.live_sessions -= 1
    except WebSocketDisconnect:
        return  # the client left: its stream goes with the session
    except Exception as e:
        error = _as_api_error(e)
        try:
            await ws.send_json({"type": "error", "error": error.response_body()})
            await ws.close(_close_code(error), reason=error.code or "")
        except (WebSocketDisconnect, OSError, RuntimeError):  # gone meanwhile
            pass
        return
    await ws.close(1000)


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
    state = request.app.state
    return JSONResponse({"status": "ok", "version": __version__, "workers": pool.workers, "ready": pool.ready,
                         "running": pool.running, "queued": pool.queued, "live_sessions": state.live_sessions,
                         "auth": bool(state.cfg.api_key)})


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


# -- limits at the door ------------------------------------------------------------------------

class Gate:
    """ASGI middleware: the API key on /v1 (compared in constant time) and the body size limit,
    from Content-Length before anything is read, and by counting for a chunked body. A WebSocket
    passes: `live` checks its key, which a browser can only send in a message."""

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
        WebSocketRoute("/v1/audio/transcriptions/live", live),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    stream_model = default_stream_model(cfg, state_models)
    preload = tuple(dict.fromkeys(filter(None, [cfg.model, stream_model])))
    pool = WorkerPool(cfg.workers, cfg.queue_size, preload=preload)

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
    app.state.stream_model, app.state.live_sessions = stream_model, 0
    return app


def uvicorn_config(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"):
    """uvicorn's settings for `app`. limit_concurrency caps open connections and tasks (each holds
    its request body), beyond what the pool queues: past it uvicorn answers 503 at once. A
    WebSocket message is at most max_message_bytes (uvicorn closes with 1009 above it), and
    uvicorn reads no further while the app has one unread: a live session holds one message."""
    import uvicorn

    cfg = app.state.cfg
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          limit_concurrency=4 * (cfg.workers + cfg.queue_size) + cfg.max_streams + 32,
                          timeout_keep_alive=5, ws_max_size=cfg.max_message_bytes)
