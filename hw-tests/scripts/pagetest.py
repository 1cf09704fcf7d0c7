"""What the browser tests of the pages share: the browser, the accessibility audit and the
conversation with `hw-tests/tests/daemon/browser.rs`, which runs the scripts and stops, starts
or inspects venued when a script asks on its stdout."""

import sys

from axe_playwright_python.sync_playwright import Axe


def launch(playwright):
    """Debian's Chromium (Playwright's own download does not work here), as root, with a camera
    that shows a test pattern and is allowed without asking."""
    return playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-dev-shm-usage", "--use-fake-device-for-media-stream",
              "--use-fake-ui-for-media-stream"],
    )


def audit(page, view):
    """axe-core in the page: no serious or critical accessibility violation."""
    results = Axe().run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert not bad, f"accessibility violations in the {view} view: {bad}"


FIRST_LOAD_BUDGET = 150 * 1024  # bytes on the wire, issue #15 (the attendee app's; each page's)


def first_load(page, name):
    """What the first visit cost (nothing cached): bytes on the wire against the budget, and
    when the page was usable (measured once its first view shows). Prints the figures
    BENCHMARKS.md records."""
    perf = page.evaluate(
        """() => {
          const nav = performance.getEntriesByType('navigation')[0];
          const res = performance.getEntriesByType('resource');
          const sum = (key) => nav[key] + res.reduce((a, e) => a + e[key], 0);
          return { wire: sum('transferSize'), body: sum('encodedBodySize'),
                   decoded: sum('decodedBodySize'), files: res.length + 1,
                   dcl: nav.domContentLoadedEventEnd, usable: performance.now() };
        }"""
    )
    print(
        f"first load of the {name}: {perf['files']} files, {perf['wire']} bytes on the wire "
        f"({perf['body']} compressed bodies, {perf['decoded']} decoded); "
        f"DOMContentLoaded {perf['dcl']:.0f} ms, usable by {perf['usable']:.0f} ms"
    )
    assert perf["wire"] <= FIRST_LOAD_BUDGET, f"first load of the {name}: {perf['wire']} B over the budget"


def ask(line):
    """Sends `line` to the test driving this script and returns its one-line answer."""
    print(line, flush=True)
    return sys.stdin.readline().strip()


def control_venued(command):
    """Has the test `STOP` venued (SIGKILL), `START` it again on the same data and port, or
    `RESTART` it (both)."""
    answer = ask(command)
    assert answer == "done", f"venued did not {command}: {answer!r}"


def checkins(attendee):
    """How many check-ins venued's database holds for `attendee`."""
    return int(ask(f"CHECKINS {attendee}"))


def run(main):
    """Runs `main`; an AssertionError is a failed check: its message, exit status 1."""
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
