"""Make docs/module-page.png, the README's picture of the module page, live.

    .venv/bin/python docs/screenshot.py [output.png]

Runs what `make run` runs (``python -m iotadmin.run``) on a throwaway var dir, a free port
and a loopback address of its own, so a `make run` already running is not in the way. In
headless Chromium (Debian's, as the browser tests use) it logs in as the generated admin,
opens myFirstDevice/myFirstModule (simulated by `make run`), sets desired telemetryInterval
to 122 in the page's form, waits for the module's acknowledgement in the live events and
takes the picture (1280 x 1350 px), then stops everything.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
VIEWPORT = {"width": 1280, "height": 1350}
PAGE = "/devices/myFirstDevice/modules/myFirstModule/"


def main(output: Path) -> None:
    from browser_support import CHROMIUM, CHROMIUM_ARGS, free_port
    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as var_dir:
        env = {
            **os.environ,
            "IOTADMIN_VAR_DIR": var_dir,
            "IOTADMIN_PORT": str(port),
            "LOCALHUB_HOST": "127.0.0.77",
            "PYTHONUNBUFFERED": "1",
        }
        stack = subprocess.Popen(
            [sys.executable, "-m", "iotadmin.run"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            password, seen = "", []
            for line in stack.stdout:
                seen.append(line)
                if found := re.search(r"Log in as admin with password (\S+)", line):
                    password = found.group(1)
                if '"module.connected"' in line:
                    break
            if not password:
                sys.exit("`python -m iotadmin.run` did not come up:\n" + "".join(seen))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(base_url=f"http://127.0.0.1:{port}", viewport=VIEWPORT)
                page.goto("/login/")
                page.get_by_label("User name").fill("admin")
                page.get_by_label("Password").fill(password)
                page.get_by_role("button", name="Log in").click()
                page.goto(PAGE)
                page.wait_for_selector("#live-status:text-is('Live')")
                card = page.locator("#desired")
                card.get_by_label("New key").fill("telemetryInterval")
                card.get_by_label("Type").last.select_option("number")
                card.get_by_label("Value").last.fill("122")
                card.get_by_role("button", name="Send changed properties").click()
                page.wait_for_selector('#event-feed li.event[data-type="twin.reported_sent"]')
                page.wait_for_timeout(500)  # the twin view refreshes after the event
                page.screenshot(path=str(output))
                browser.close()
        finally:
            stack.send_signal(signal.SIGINT)
            stack.wait(30)
    print(f"written to {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "module-page.png")
