"""Load a page in real headless Chromium, offline, and report what a reader would see.

Used to prove that the HTML report renders: no console errors, no uncaught exceptions,
no failed requests (the page must load nothing), every chart laid out with a real size,
and a full-page PNG screenshot for the README.

Chromium is driven over the Chrome DevTools Protocol with ``--remote-debugging-pipe``:
commands go in on the browser's fd 3 and answers come out on fd 4, NUL-separated JSON.
That needs no port, no websocket library and no driver binary; a ``/bin/sh`` trampoline
moves our stdin/stdout pipes to fds 3 and 4 before it execs Chromium (so POSIX only).

Offline, three ways: DNS resolves nothing (``--host-resolver-rules``), background
services are off, and the page's network is emulated as offline, so any request the page
made would fail and be reported. Every run uses a fresh temporary profile, removed
afterwards, and one deadline covers the whole run; on timeout or error the browser's
whole process group is killed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blindsum.errors import FailedPrecondition, Internal, InvalidArgument, Unavailable

__all__ = [
    "ENV_VAR",
    "MIN_CHART_TEXT_PX",
    "PageCheck",
    "RegionColumn",
    "check_page",
    "find_chromium",
]

#: Smallest chart text a reader should have to read, in CSS pixels.
MIN_CHART_TEXT_PX = 10.0

#: Names a Chromium (or Chrome) binary to use instead of searching PATH.
ENV_VAR = "BLINDSUM_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Debian's location, for when PATH lacks /usr/bin (cron, minimal shells).
_DEBIAN_CHROMIUM = "/usr/bin/chromium"

#: Longest wait for a browser's exit status once its pipe has closed.
_EXIT_GRACE_S = 10.0

#: Moves our pipes to the fds --remote-debugging-pipe expects, then becomes Chromium.
_TRAMPOLINE = 'exec "$@" 3<&0 4>&1 </dev/null >&2'

# Charts a layout variant hides on purpose (an element with data-layout and display:none
# around them: the report draws every chart for a wide and a narrow screen) are skipped.
_MEASURE_CHARTS = """
Array.from(document.querySelectorAll('svg.chart')).filter(function (svg) {
  var variant = svg.parentElement && svg.parentElement.closest('[data-layout]');
  return !variant || getComputedStyle(variant).display !== 'none';
}).map(function (svg) {
  var box = svg.getBoundingClientRect();
  return [svg.getAttribute('data-chart') || '', box.width, box.height];
})
"""

# What a reader on this viewport sees of the layout: does the page scroll sideways, can
# every region's column (th[data-region]) be seen or scrolled to inside its own scroll
# box, and how large every displayed chart's text is on screen (the computed font size
# times the SVG's scale, its rendered width over its viewBox width).
_MEASURE_LAYOUT = """
(function () {
  var vw = window.innerWidth;
  function scroller(el) {
    for (var p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      var overflow = getComputedStyle(p).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') return p;
    }
    return null;
  }
  var columns = Array.from(document.querySelectorAll('th[data-region]')).map(function (th) {
    var box = th.getBoundingClientRect();
    var shown = box.width > 0 && box.left >= -0.5 && box.right <= vw + 0.5;
    var reachable = false;
    var box2 = scroller(th);
    if (box2 && box.width > 0) {
      var outer = box2.getBoundingClientRect();
      var right = box.right - outer.left + box2.scrollLeft;
      reachable = outer.left >= -0.5 && outer.right <= vw + 0.5 &&
        box2.scrollWidth + 0.5 >= right;
    }
    return [th.getAttribute('data-region') || '', box.left, box.right, shown, reachable];
  });
  var texts = [];
  Array.from(document.querySelectorAll('svg.chart')).forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var view = svg.viewBox && svg.viewBox.baseVal;
    if (box.width === 0 || box.height === 0) return;
    var scale = view && view.width ? box.width / view.width : 1;
    Array.from(svg.querySelectorAll('text')).forEach(function (t) {
      var size = parseFloat(getComputedStyle(t).fontSize) * scale;
      texts.push([svg.getAttribute('data-chart') || '', t.textContent || '', size]);
    });
  });
  return {viewport: vw, page: document.documentElement.scrollWidth, columns: columns,
          texts: texts};
})()
"""

Json = dict[str, Any]


@dataclass(frozen=True)
class RegionColumn:
    """Where a table's region column header (``th[data-region]``) is on screen, in CSS
    pixels from the viewport's left edge."""

    region: str
    left: float
    right: float
    #: Wholly inside the viewport as laid out.
    in_viewport: bool
    #: Inside a horizontal scroll box (overflow-x auto/scroll) that is itself within the
    #: viewport and whose scroll width reaches the header's right edge.
    scroll_reachable: bool

    @property
    def reachable(self) -> bool:
        return self.in_viewport or self.scroll_reachable


@dataclass(frozen=True)
class PageCheck:
    """What loading a page showed.

    ``console_errors``: console errors, uncaught exceptions and failed requests, one line
    each, in the order they happened. ``charts``: each displayed ``svg.chart``'s
    ``data-chart`` and rendered width and height in CSS pixels, in document order (a
    chart inside a layout variant the page hides, ``[data-layout]`` with display none,
    is left out). ``viewport_width`` and ``page_width`` (the document's scroll width):
    the page scrolls sideways when the second exceeds the first. ``columns``: every
    region column header. ``chart_text``: (chart, text, rendered font size in px) of
    every text element of every displayed chart.
    """

    console_errors: list[str]
    charts: list[tuple[str, float, float]]
    screenshot: Path
    viewport_width: float = 0.0
    page_width: float = 0.0
    columns: list[RegionColumn] = field(default_factory=list)
    chart_text: list[tuple[str, str, float]] = field(default_factory=list)

    def layout_problems(self) -> list[str]:
        """Why the page does not read at this width, one short phrase each: it scrolls
        sideways, a region's column cannot be reached, or chart text is under
        :data:`MIN_CHART_TEXT_PX`. Empty when it reads."""
        found: list[str] = []
        if self.page_width > self.viewport_width + 0.5:
            found.append(
                f"the page scrolls sideways ({self.page_width:g} px wide in a"
                f" {self.viewport_width:g} px viewport)"
            )
        cut = [c.region for c in self.columns if not c.reachable]
        if cut:
            found.append(f"region columns cut off: {', '.join(cut)}")
        small = [t for t in self.chart_text if t[2] < MIN_CHART_TEXT_PX - 1e-6]
        if small:
            chart, text, size = min(small, key=lambda t: t[2])
            found.append(
                f"{len(small)} chart text(s) under {MIN_CHART_TEXT_PX:g} px, smallest"
                f" {size:.1f} px ({chart}: {text!r})"
            )
        return found


def find_chromium() -> str | None:
    """The Chromium binary to use, or None when there is none.

    ``$BLINDSUM_CHROMIUM`` wins when set (a path or a name on PATH; None if it names
    nothing executable, so a wrong setting is not silently replaced by another browser).
    Otherwise the first of chromium, chromium-browser, google-chrome on PATH, then
    Debian's /usr/bin/chromium.
    """
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return shutil.which(configured)
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    return shutil.which(_DEBIAN_CHROMIUM)


def _flags(user_data_dir: Path, width: int, height: int) -> list[str]:
    flags = [
        "--headless=new",
        "--disable-gpu",
        f"--user-data-dir={user_data_dir}",
        "--remote-debugging-pipe",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--hide-scrollbars",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "about:blank",
    ]
    # Chromium's sandbox cannot start as root; a container runs us as root.
    if os.geteuid() == 0:
        flags.insert(0, "--no-sandbox")
    return flags


class _DevTools:
    """One Chromium process and its DevTools pipe; events go to ``on_event``."""

    def __init__(self, proc: subprocess.Popen[bytes], deadline: float, stderr: Path) -> None:
        if proc.stdin is None or proc.stdout is None:
            raise Internal("chromium was started without its DevTools pipes", field="chromium")
        self._proc = proc
        self._commands = proc.stdin
        self._answers = proc.stdout.fileno()
        self._deadline = deadline
        self._stderr = stderr
        self._buffer = b""
        self._next_id = 0
        self._events: list[Json] = []
        #: Why the browser is gone (exit status, last stderr line), once a closed pipe
        #: showed it; None while it answers (a timeout leaves it None too).
        self.died: str | None = None

    def _dead(self) -> Unavailable:
        """Record that the pipe closed (read EOF or write EPIPE); the one-line error."""
        if self.died is None:
            self.died = self.why_dead()
        return Unavailable(f"stopped ({self.died})", field="chromium")

    def why_dead(self) -> str:
        """Exit status and the last line Chromium wrote to stderr, for a one-line error.

        A closed pipe comes a moment before the exit status can be collected (the
        kernel closes a dying process's files first), so this waits a little for it,
        bounded by the run's deadline.
        """
        grace = min(_EXIT_GRACE_S, max(self._deadline - time.monotonic(), 0.1))
        try:
            code: int | None = self._proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            code = None
        tail = ""
        try:
            lines = [ln.strip() for ln in self._stderr.read_text(errors="replace").splitlines()]
            tail = next((ln for ln in reversed(lines) if ln), "")
        except OSError:
            pass
        status = f"exit {code}" if code is not None else "closed its pipe"
        return f"{status}: {tail[:200]}" if tail else status

    def _read_message(self) -> Json:
        while b"\0" not in self._buffer:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable("did not answer in time", field="chromium")
            ready, _, _ = select.select([self._answers], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise self._dead()
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: Json = json.loads(raw)
        return message

    def call(self, method: str, params: Json | None = None, session: str | None = None) -> Json:
        """Send one command and return its result; events seen meanwhile are queued."""
        self._next_id += 1
        message: Json = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            self._commands.write(json.dumps(message).encode() + b"\0")
            self._commands.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The browser died before reading: writing to its closed pipe fails with
            # EPIPE (Python ignores SIGPIPE). Whether that or an EOF on the answer pipe
            # comes first depends on scheduling; both give the same one-line error.
            raise self._dead() from None
        while True:
            reply = self._read_message()
            if reply.get("id") != self._next_id:
                self._events.append(reply)
                continue
            if "error" in reply:
                detail = reply["error"].get("message", "unknown error")
                raise Internal(f"DevTools {method} failed: {detail}", field="chromium")
            result: Json = reply.get("result", {})
            return result

    def wait_for(self, method: str, session: str) -> None:
        """Read until the event ``method`` arrives on ``session`` (it stays queued)."""
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self._events
        ):
            self._events.append(self._read_message())

    def events(self, session: str) -> list[Json]:
        return [e for e in self._events if e.get("sessionId") == session]


def _describe_console(params: Json) -> str:
    parts = []
    for arg in params.get("args", []):
        value = arg.get("value", arg.get("description", arg.get("type", "")))
        parts.append(value if isinstance(value, str) else json.dumps(value))
    return f"console.{params.get('type', 'error')}: {' '.join(parts)}"


def _page_errors(events: list[Json]) -> list[str]:
    """Console errors, uncaught exceptions and failed requests, one line each."""
    urls: dict[str, str] = {}
    errors: list[str] = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[params.get("requestId", "")] = params.get("request", {}).get("url", "")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exc = details.get("exception", {})
            text = exc.get("description") or details.get("text", "exception")
            errors.append(f"uncaught exception: {text.splitlines()[0] if text else text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(_describe_console(params))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            errors.append(f"{entry.get('source', 'log')}: {entry.get('text', '')}{where}")
        elif method == "Network.loadingFailed":
            url = urls.get(params.get("requestId", ""), "?")
            why = params.get("blockedReason") or params.get("errorText") or "failed"
            errors.append(f"request failed: {url}: {why}")
        elif method == "Network.responseReceived":
            response = params.get("response", {})
            if int(response.get("status", 0)) >= 400:
                errors.append(f"request failed: {response.get('url', '?')}: {response['status']}")
        elif method == "Inspector.targetCrashed":
            errors.append("the page crashed")
    return [" ".join(error.split()) for error in errors]


def _start(chromium: str, workdir: Path, width: int, height: int) -> subprocess.Popen[bytes]:
    profile = workdir / "profile"
    profile.mkdir()
    env = dict(os.environ)
    # Keep Chromium's config and cache writes inside the temporary directory too.
    env.update(XDG_CONFIG_HOME=str(workdir / "config"), XDG_CACHE_HOME=str(workdir / "cache"))
    argv = ["/bin/sh", "-c", _TRAMPOLINE, "sh", chromium, *_flags(profile, width, height)]
    with (workdir / "stderr.log").open("wb") as stderr:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"failed to start: {exc}", field="chromium") from None


def _stop(proc: subprocess.Popen[bytes], *, polite: bool) -> None:
    """Ask the browser to close, then kill whatever is left of its process group."""
    if polite and proc.stdin is not None and proc.poll() is None:
        try:
            proc.stdin.write(b'{"id":0,"method":"Browser.close"}\0')
            proc.stdin.flush()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            # Closing flushes what a failed write left in the buffer: to a dead browser
            # that raises BrokenPipeError, which must not replace the real error.
            with contextlib.suppress(OSError):
                stream.close()
    proc.wait()


def _load_and_capture(
    devtools: _DevTools, url: str, screenshot: Path, width: int, height: int
) -> PageCheck:
    target = devtools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"
    ]
    for domain in ("Runtime", "Log", "Network", "Page", "Inspector"):
        devtools.call(f"{domain}.enable", session=session)
    devtools.call(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        session,
    )
    devtools.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session,
    )
    navigated = devtools.call("Page.navigate", {"url": url}, session)
    extra = [f"navigation failed: {navigated['errorText']}"] if navigated.get("errorText") else []
    devtools.wait_for("Page.loadEventFired", session)
    devtools.call(
        "Runtime.evaluate",
        {
            "expression": "document.fonts.ready.then(function () { return 1; })",
            "awaitPromise": True,
        },
        session,
    )
    measured = devtools.call(
        "Runtime.evaluate", {"expression": _MEASURE_CHARTS, "returnByValue": True}, session
    )
    charts = [(str(name), float(w), float(h)) for name, w, h in measured["result"].get("value", [])]
    layout: Json = devtools.call(
        "Runtime.evaluate", {"expression": _MEASURE_LAYOUT, "returnByValue": True}, session
    )["result"].get("value", {})
    metrics = devtools.call("Page.getLayoutMetrics", session=session)
    content: Json = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
    clip = {
        "x": 0,
        "y": 0,
        "width": max(float(content.get("width", width)), float(width)),
        "height": max(float(content.get("height", height)), 1.0),
        "scale": 1,
    }
    shot = devtools.call(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": clip},
        session,
    )
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return PageCheck(
        extra + _page_errors(devtools.events(session)),
        charts,
        screenshot,
        viewport_width=float(layout.get("viewport", width)),
        page_width=float(layout.get("page", 0.0)),
        columns=[
            RegionColumn(str(name), float(left), float(right), bool(shown), bool(reach))
            for name, left, right, shown, reach in layout.get("columns", [])
        ],
        chart_text=[(str(c), str(t), float(size)) for c, t, size in layout.get("texts", [])],
    )


def check_page(
    html_path: Path,
    screenshot: Path,
    *,
    width: int = 1280,
    height: int = 900,
    timeout_s: float = 45.0,
    chromium: str | None = None,
) -> PageCheck:
    """Load ``html_path`` in headless Chromium, measure its charts, save a screenshot.

    ``screenshot`` receives a full-page PNG at ``width`` CSS pixels (``height`` is the
    viewport). The whole run is bounded by ``timeout_s``. ``chromium`` defaults to
    :func:`find_chromium`. Raises FailedPrecondition when there is no Chromium,
    Unavailable (one line) when it fails to start, stops or times out, and
    InvalidArgument when ``html_path`` is not a file.
    """
    if not html_path.is_file():
        raise InvalidArgument("not a file", field="html_path")
    binary = chromium or find_chromium()
    if binary is None:
        raise FailedPrecondition(
            f"no Chromium found: run `make chromium` or set {ENV_VAR}", field="chromium"
        )
    deadline = time.monotonic() + timeout_s
    workdir = Path(tempfile.mkdtemp(prefix="blindsum-chromium-"))
    try:
        proc = _start(binary, workdir, width, height)
        started = False
        try:
            devtools = _DevTools(proc, deadline, workdir / "stderr.log")
            try:
                devtools.call("Browser.getVersion")
            except Unavailable:
                why = devtools.died or "no answer in time"
                raise Unavailable(f"failed to start ({why})", field="chromium") from None
            started = True
            url = html_path.resolve().as_uri()
            return _load_and_capture(devtools, url, screenshot, width, height)
        finally:
            _stop(proc, polite=started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
