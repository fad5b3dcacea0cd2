"""A loopback HTTP router that stands where moto's Step Functions interpreter sends service calls.

moto's interpreter sends every service call of a running execution (Lambda Invoke, SNS Publish, …)
to `http://localhost:$MOTO_PORT`. The tests start moto on one port with `MOTO_PORT` set to the port
of this router, which

- answers `POST /2015-03-31/functions/<name>/invocations` itself, from the handler registered for
  `<name>` (the function name, or the name inside a function ARN), and
- forwards every other request to moto unchanged.

A handler is any callable `payload -> result` (both JSON values). To fail the invocation the way a
Lambda function does, it raises `FunctionError(error_type, message)`: the router answers 200 with
`X-Amz-Function-Error: Unhandled` and `{"errorType": …, "errorMessage": …}`, which Step Functions
turns into an error named `error_type` (what `Retry`/`Catch` match on).

Handlers provided here:
- `scripted([...])` — answers from a list, in order (a `FunctionError` in the list is raised);
- `by_action({...})` — dispatches on the payload's `action` field to one handler per action;
- `register_operation("RedshiftData.BatchExecuteStatement", fn)` — answers one operation of a
  JSON-protocol service (matched on `X-Amz-Target`) instead of moto, for APIs moto lacks; point a
  function's `AWS_ENDPOINT_URL` at the router to use it;
- `on_request(hook)` — sees every request the router would forward, to inject faults: a hook
  returns `None` (forward as usual), an `Answer` (sent instead of moto's), or `CutBody(after)`
  (forward, then drop the connection after `after` bytes of moto's body); it may also act, e.g.
  kill a function process when it sees one of its uploads. `s3_operation(request)` names the S3
  operation of a path-style request (`GetObject`, `UploadPart`, …);
- the **real-handler hook** for the end-to-end run with the Rust functions:
  `command_handler(argv)` runs a binary that reads the event on stdin and prints the result on
  stdout (a small test binary around the function's `handle`), and
  `http_invoke_handler(base_url)` forwards the invocation to a Lambda Invoke API emulator such as
  `cargo lambda watch` (`http://127.0.0.1:9000`), keeping its `X-Amz-Function-Error`, and
  `RuntimeApi(name, [bootstrap], env)` runs the function's real binary behind a Lambda Runtime API
  (what the end-to-end test uses), and `Pool([...])` spreads invocations over several of them, as
  Lambda runs concurrent invocations in separate execution environments.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

Handler = Callable[[Any], Any]

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
# Headers that describe one hop of the connection, not the message: never forwarded.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
}


class FunctionError(Exception):
    """A function error as the Lambda runtime reports it (`errorType`, `errorMessage`)."""

    def __init__(self, error_type: str, message: str = ""):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class ServiceError(Exception):
    """An AWS JSON-protocol error answer (`{"__type": code, "message": …}`) of a stubbed operation."""

    def __init__(self, code: str, message: str = "", status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Invocation:
    function: str
    payload: Any
    result: Any = None
    error: FunctionError | None = None


@dataclass
class Request:
    """One request the router is about to forward, as a fault-injection hook sees it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes

    @property
    def target(self) -> str | None:
        """`X-Amz-Target` of a JSON-protocol call (`AWSStepFunctions.StartExecution`)."""
        return self.headers.get("X-Amz-Target")

    @property
    def bucket_and_key(self) -> tuple[str, str]:
        """The bucket and the (decoded) key of a path-style S3 request; the key may be empty."""
        bucket, _, key = self.path.lstrip("/").partition("/")
        return urllib.parse.unquote(bucket), urllib.parse.unquote(key)


@dataclass
class Answer:
    """What the router answers instead of forwarding a request."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class CutBody:
    """Forward the request, send moto's status, headers and only the first `after` bytes of its
    body, then drop the connection: a stream that fails midway."""

    after: int


Hook = Callable[[Request], "Answer | CutBody | None"]


def s3_operation(request: Request) -> str | None:
    """The S3 operation of a path-style request to an object or a bucket (None otherwise)."""
    if request.target is not None or request.path.startswith("/2015-03-31/"):
        return None
    bucket, key = request.bucket_and_key
    q, m = request.query, request.method
    if not bucket:
        return None
    if not key:
        if "uploads" in q:
            return "ListMultipartUploads"
        return {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket"}.get(m)
    if "uploadId" in q:
        if m == "PUT":
            return "UploadPart"
        return {"POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload", "GET": "ListParts"}.get(m)
    if "uploads" in q and m == "POST":
        return "CreateMultipartUpload"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}.get(m)


def json_error(code: str, message: str = "", status: int = 400) -> Answer:
    """A JSON-protocol service error (`ThrottlingException`, …) as AWS sends it."""
    body = json.dumps({"__type": code, "message": message}).encode()
    return Answer(status, {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": code}, body)


def function_name(path_segment: str) -> str:
    """`lago-transform`, or the name inside `arn:aws:lambda:<region>:<acct>:function:<name>[:qualifier]`."""
    name = urllib.parse.unquote(path_segment)
    if name.startswith("arn:"):
        parts = name.split(":")
        if len(parts) >= 7 and parts[5] == "function":
            return parts[6]
    # `name:qualifier` (a version or alias) also names the function.
    return name.split(":", 1)[0]


def scripted(responses: Iterable[Any], *, repeat_last: bool = True) -> Handler:
    """Answers the invocations in order from `responses`; `FunctionError` items are raised.

    With `repeat_last`, the last response answers every further invocation (a crawler that stays
    RUNNING forever); otherwise running out is an error of the test itself."""
    items = list(responses)
    if not items:
        raise ValueError("scripted() needs at least one response")
    lock = threading.Lock()
    state = {"next": 0}

    def handle(_payload: Any) -> Any:
        with lock:
            i = state["next"]
            if i >= len(items) and not repeat_last:
                raise FunctionError("ScriptExhausted", f"no scripted response #{i + 1}")
            state["next"] = i + 1
            item = items[min(i, len(items) - 1)]
        if isinstance(item, FunctionError):
            raise item
        return item

    return handle


def by_action(handlers: dict[str | None, Handler]) -> Handler:
    """One handler per `action` of the payload (start-crawler and redshift-load take an action;
    the `None` handler answers payloads without one, as transform's tasks beside its verify)."""

    def handle(payload: Any) -> Any:
        action = payload.get("action") if isinstance(payload, dict) else None
        if action not in handlers:
            raise FunctionError("InvalidInput", f"unexpected action {action!r}")
        return handlers[action](payload)

    return handle


# --- the real-handler hook -------------------------------------------------------------------


def command_handler(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 300.0
) -> Handler:
    """Runs `argv` once per invocation: the event as JSON on stdin, the result as JSON on stdout.

    A non-zero exit is a function error: stdout (or stderr) holding `{"errorType", "errorMessage"}`
    gives its type, anything else is reported as `Unhandled`. `env` is added to this process's
    environment (e.g. `AWS_ENDPOINT_URL` of the moto server and the function's configuration)."""
    full_env = {**os.environ, **(env or {})}

    def handle(payload: Any) -> Any:
        done = subprocess.run(
            argv,
            input=json.dumps(payload).encode(),
            capture_output=True,
            env=full_env,
            timeout=timeout,
            check=False,
        )
        if done.returncode == 0:
            return json.loads(done.stdout or b"null")
        for stream in (done.stdout, done.stderr):
            try:
                err = json.loads(stream)
                raise FunctionError(str(err["errorType"]), str(err.get("errorMessage", "")))
            except (ValueError, KeyError, TypeError):
                continue
        raise FunctionError("Unhandled", done.stderr.decode(errors="replace")[-2000:])

    return handle


def http_invoke_handler(base_url: str, function: str | None = None, timeout: float = 300.0) -> Handler:
    """Forwards the invocation to a Lambda Invoke API at `base_url` (e.g. `cargo lambda watch`).

    `function` overrides the name invoked there (cargo lambda serves each binary by its name)."""
    target = urllib.parse.urlsplit(base_url)

    def handle(payload: Any, *, _name: str | None = None) -> Any:
        name = function or _name
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout)
        try:
            conn.request(
                "POST",
                f"/2015-03-31/functions/{urllib.parse.quote(name or '', safe='')}/invocations",
                body=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        try:
            data = json.loads(body or b"null")
        except ValueError:
            data = body.decode(errors="replace")
        if resp.getheader("X-Amz-Function-Error") or resp.status >= 300:
            data = data if isinstance(data, dict) else {}
            raise FunctionError(
                str(data.get("errorType", "Unhandled")),
                str(data.get("errorMessage", body[:2000].decode(errors="replace"))),
            )
        return data

    handle.wants_name = True  # type: ignore[attr-defined]
    return handle


# --- the router ------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server that takes a peer dropping its connection (a killed function
    process, a stream cut on purpose) as the fault it is, not as an error to print."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)



@dataclass
class LambdaRouter:
    """Serves on `127.0.0.1:<port>`; set `moto_url` before the first forwarded request."""

    moto_url: str = ""
    handlers: dict[str, Handler] = field(default_factory=dict)
    invocations: list[Invocation] = field(default_factory=list)
    # X-Amz-Target (e.g. "RedshiftData.BatchExecuteStatement") → request body → response body.
    operations: dict[str, Handler] = field(default_factory=dict)
    operation_calls: list[tuple[str, Any]] = field(default_factory=list)
    hooks: list[Hook] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._request_handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> "LambdaRouter":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def register(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def register_operation(self, target: str, handler: Handler) -> None:
        self.operations[target] = handler

    def on_request(self, hook: Hook) -> None:
        """Shows every request to be forwarded to `hook` first (in the order hooks were added;
        the first that answers wins)."""
        self.hooks.append(hook)

    def reset(self) -> None:
        with self._lock:
            self.handlers.clear()
            self.invocations.clear()
            self.operations.clear()
            self.operation_calls.clear()
            self.hooks.clear()

    def operation(self, target: str, request: Any) -> tuple[int, dict[str, str], bytes]:
        """What the router answers for a stubbed JSON-protocol operation."""
        with self._lock:
            self.operation_calls.append((target, request))
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        try:
            return 200, headers, json.dumps(self.operations[target](request)).encode()
        except ServiceError as e:
            return e.status, headers, json.dumps({"__type": e.code, "message": e.message}).encode()

    def calls(self, name: str) -> list[Invocation]:
        with self._lock:
            return [c for c in self.invocations if c.function == name]

    def invoke(self, name: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
        """What the router answers for an invocation of `name` (status, headers, body)."""
        handler = self.handlers[name]
        call = Invocation(function=name, payload=payload)
        headers = {"Content-Type": "application/json", "X-Amz-Executed-Version": "$LATEST"}
        try:
            if getattr(handler, "wants_name", False):
                call.result = handler(payload, _name=name)  # type: ignore[call-arg]
            else:
                call.result = handler(payload)
            body = json.dumps(call.result).encode()
        except FunctionError as e:
            call.error = e
            headers["X-Amz-Function-Error"] = "Unhandled"
            body = json.dumps({"errorType": e.error_type, "errorMessage": e.message}).encode()
        with self._lock:
            self.invocations.append(call)
        return 200, headers, body

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        router = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:  # quiet: pytest shows failures
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    if k.lower() not in _HOP_BY_HOP:
                        self.send_header(k, v)
                if self.command == "HEAD":
                    # A HEAD answer has no body but says how long the object is.
                    length = next((v for k, v in headers.items() if k.lower() == "content-length"), "0")
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _route(self) -> None:
                body = self._body()
                url = urllib.parse.urlsplit(self.path)
                m = _INVOKE_PATH.match(url.path)
                if self.command == "POST" and m:
                    name = function_name(m.group("name"))
                    if name in router.handlers:
                        payload = json.loads(body) if body else None
                        self._reply(*router.invoke(name, payload))
                        return
                target = self.headers.get("X-Amz-Target")
                if target in router.operations:
                    self._reply(*router.operation(target, json.loads(body) if body else {}))
                    return
                request = Request(self.command, url.path, urllib.parse.parse_qs(url.query, keep_blank_values=True), self.headers, body)
                cut = None
                for hook in list(router.hooks):
                    done = hook(request)
                    if isinstance(done, Answer):
                        self._reply(done.status, done.headers, done.body)
                        return
                    if isinstance(done, CutBody):
                        cut = done.after
                        break
                self._forward(body, cut)

            def _forward(self, body: bytes, cut: int | None) -> None:
                """Sends the request to moto and streams its answer back (a 200 MB object is never
                held whole); with `cut`, only that many bytes of the body, then the connection drops."""
                target = urllib.parse.urlsplit(router.moto_url)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=300)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    if body:
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    length = resp.getheader("Content-Length")
                    if self.command == "HEAD" or length is None:
                        self._reply(resp.status, dict(resp.getheaders()), resp.read())
                        return
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP_BY_HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    left = int(length) if cut is None else min(cut, int(length))
                    while left > 0:
                        chunk = resp.read(min(left, 1 << 20))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        left -= len(chunk)
                    if cut is not None:
                        self.wfile.flush()
                        self.close_connection = True
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _route

        return RequestHandler


# --- the Lambda Runtime API, for the real function binaries -----------------------------------


class RuntimeApi:
    """A Lambda Runtime API on loopback that runs one real function binary (`bootstrap`).

    The binary is started with `AWS_LAMBDA_RUNTIME_API` pointing here, exactly as Lambda starts
    it: it long-polls `GET …/invocation/next`, and answers `POST …/invocation/<id>/response` or
    `…/error`. `invoke(payload)` queues an event and waits for that answer, so the router can use
    a `RuntimeApi` as the handler of a function name. An init error or an exit of the process
    fails the pending invocation with its message instead of hanging the test; the next
    invocation starts the binary again, as Lambda starts a new execution environment."""

    _PREFIX = "/2018-06-01/runtime"

    def __init__(self, name: str, argv: list[str], env: dict[str, str], timeout: float = 120.0):
        self.name = name
        self.timeout = timeout
        self._events: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self._answers: dict[str, "queue.Queue[tuple[bool, Any]]"] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._request_handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.log = tempfile.NamedTemporaryFile(prefix=f"lago-{name}-", suffix=".log", delete=False)
        self._argv = argv
        self._env = {
            **os.environ,
            **env,
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self._server.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        }
        self.starts = 0
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self._argv, env=self._env, stdout=self.log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        """Kills the function's process at once (SIGKILL: no clean-up runs), as an out-of-memory
        kill or a lost host would. The invocation it was running fails with `Runtime.ExitError`."""
        self.proc.send_signal(signal.SIGKILL)

    def peak_rss(self) -> int:
        """The process's peak resident set size in bytes (`VmHWM`) since it started or since
        `reset_peak_rss`."""
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmHWM for {self.name} (pid {self.proc.pid})")

    def reset_peak_rss(self) -> None:
        """Resets `VmHWM` to the current resident set size (Linux: `5` into `clear_refs`)."""
        with open(f"/proc/{self.proc.pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")

    def logs(self) -> str:
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def __call__(self, payload: Any) -> Any:
        if self.proc.poll() is not None:
            # The process exited (killed, crashed): Lambda starts a new execution environment.
            self._spawn()
        request_id = str(uuid.uuid4())
        answer: "queue.Queue[tuple[bool, Any]]" = queue.Queue()
        with self._lock:
            self._answers[request_id] = answer
        self._events.put((request_id, payload))
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                ok, body = answer.get(timeout=0.2)
                break
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise FunctionError("Runtime.ExitError", f"{self.name} exited: {self.logs()[-2000:]}")
                if time.monotonic() > deadline:
                    raise FunctionError("Sandbox.Timedout", f"{self.name} did not answer in {self.timeout}s")
        if ok:
            return body
        body = body if isinstance(body, dict) else {}
        raise FunctionError(str(body.get("errorType", "Unhandled")), str(body.get("errorMessage", "")))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, request_id: str, ok: bool, body: Any) -> None:
        with self._lock:
            answer = self._answers.pop(request_id, None)
        if answer is not None:
            answer.put((ok, body))

    def _fail_all(self, body: Any) -> None:
        with self._lock:
            pending, self._answers = self._answers, {}
        for answer in pending.values():
            answer.put((False, body))

    def _request_handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{api._PREFIX}/invocation/next":
                    self._reply(404, b"{}")
                    return
                request_id, payload = api._events.get()
                deadline_ms = int((time.time() + api.timeout) * 1000)
                self._reply(
                    200,
                    json.dumps(payload).encode(),
                    {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": f"arn:aws:lambda:us-east-1:123456789012:function:{api.name}",
                        "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
                    },
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = {"errorType": "Runtime.InvalidResponse", "errorMessage": raw[:2000].decode(errors="replace")}
                parts = self.path[len(api._PREFIX) :].strip("/").split("/")
                if parts == ["init", "error"]:
                    api._fail_all(body)
                elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    api._answer(parts[1], parts[2] == "response", body)
                else:
                    self._reply(404, b"{}")
                    return
                self._reply(202, b'{"status":"OK"}')

        return RequestHandler


class Pool:
    """Several execution environments of one function: each invocation goes to a free one, so up
    to `len(runtimes)` run at once, as Lambda scales a function out."""

    def __init__(self, runtimes: list[RuntimeApi]):
        self.runtimes = runtimes
        self._free: "queue.Queue[RuntimeApi]" = queue.Queue()
        for runtime in runtimes:
            self._free.put(runtime)

    def __call__(self, payload: Any) -> Any:
        runtime = self._free.get()
        try:
            return runtime(payload)
        finally:
            self._free.put(runtime)

    def logs(self) -> str:
        return "\n".join(r.logs() for r in self.runtimes)

    def stop(self) -> None:
        for runtime in self.runtimes:
            runtime.stop()
