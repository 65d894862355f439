"""
The web page in a real browser: headless Debian Chromium driven by
Playwright, against the real proxy and backend.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.processes import MiB, call, eventually, partials, sha256File, sharedFile, startStack
from tests.tusenv import Cutter, patches

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def browserScenario(
    url: str, small: Path, large: Path, screenshots: Path
) -> dict[str, Any]:
    """
    Runs in a thread: upload C{small} and wait for it, cancel C{large}
    half-way, then delete C{small}. Returns what the page showed.
    """
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            # The page forbids eval; the test harness needs it for its checks.
            page = browser.new_page(viewport={"width": 1200, "height": 800}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("#empty:not([hidden])")

            page.set_input_files("#picker", str(small))
            row = f'li.upload[data-name="{small.name}"]'
            page.wait_for_function(
                f"document.querySelector('{row} progress')?.value > 0", timeout=30000
            )
            page.screenshot(path=str(screenshots / "uploading.png"), full_page=True)
            page.wait_for_selector(f"{row}.done", timeout=120000)
            seen["state"] = page.inner_text(f"{row} .state")
            seen["progress"] = page.get_attribute(f"{row} progress", "value")
            stored = f'#files tr[data-name="{small.name}"]'
            page.wait_for_selector(stored)
            seen["tableSHA"] = page.inner_text(f"{stored} td.sha")
            seen["tableSize"] = page.get_attribute(f"{stored} td.size", "title")
            page.screenshot(path=str(screenshots / "stored.png"), full_page=True)

            page.set_input_files("#picker", str(large))
            cancelled = f'li.upload[data-name="{large.name}"]'
            page.wait_for_function(
                f"document.querySelector('{cancelled} progress')?.value >= 10",
                timeout=60000,
            )
            seen["cancelledAt"] = page.get_attribute(f"{cancelled} progress", "value")
            page.click(f"{cancelled} .cancel")
            page.wait_for_selector(f"{cancelled}.failed", timeout=10000)
            seen["cancelState"] = page.inner_text(f"{cancelled} .state")

            page.click(f"{stored} .delete")
            page.click(f"{stored} .delete")
            page.wait_for_selector(stored, state="detached", timeout=10000)
            seen["afterDelete"] = page.inner_text("#files tbody")
            seen["errors"] = errors
        finally:
            browser.close()
    return seen


class BrowserTests(TestCase):
    timeout = 300

    def setUp(self) -> None:
        try:
            import playwright  # noqa: F401
        except ImportError:
            raise SkipTest("playwright is not installed (make test installs it)") from None
        if not Path(CHROMIUM).exists():
            raise SkipTest("Debian's chromium is not installed (.ci/run installs it)")

    async def test_uploadCancelDelete(self) -> None:
        """
        Through the page: a 64 MiB upload reaches 100 % and shows the
        source's sha256 in the table; a cancelled upload stores nothing; a
        deleted file is gone.
        """
        storage = Path(self.mktemp()) / "uploads"
        screenshots = Path(self.mktemp())
        screenshots.mkdir()
        small, smallSHA = sharedFile(64 * MiB)
        large, _ = sharedFile(256 * MiB)
        # A slow disk keeps uploads going long enough to watch and cancel.
        backend, proxy = await startStack(
            self, storage, backendArgs=["--debug-write-rate", str(32 * MiB)]
        )
        started = time.monotonic()
        seen = await deferToThread(browserScenario, proxy.url + "/", small, large, screenshots)
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["state"], "Stored")
        self.assertEqual(seen["progress"], "100")
        self.assertEqual(seen["tableSHA"], smallSHA)
        self.assertEqual(seen["tableSize"], f"{64 * MiB} bytes")
        self.assertEqual(seen["cancelState"], "Cancelled")
        self.assertLess(int(seen["cancelledAt"] or 0), 100)
        self.assertNotIn(small.name, seen["afterDelete"])
        self.assertFalse((storage / small.name).exists())
        self.assertTrue(await eventually(lambda: partials(storage) == [], 5))
        # The page sends with tus: the cancelled upload was terminated too.
        self.assertIn(b"tus terminated", backend.output)
        self.assertTrue(await eventually(lambda: list((storage / ".tus").glob("*.part")) == [], 5))
        self.assertFalse((storage / large.name).exists())
        self.assertTrue((screenshots / "uploading.png").stat().st_size > 1000)
        print(f"\nbrowser scenario took {time.monotonic() - started:.1f} s; "
              f"screenshots in {screenshots.resolve()}")


def cutScenario(url: str, source: Path) -> dict[str, Any]:
    """Runs in a thread: upload C{source} through a connection that is cut once."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            # The page's own Content-Security-Policy holds here: tus.min.js
            # must work under it.
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(url)
            page.wait_for_selector("#empty:not([hidden])")
            page.set_input_files("#picker", str(source))
            row = f'li.upload[data-name="{source.name}"]'
            page.wait_for_selector(f"{row}.done", timeout=120000)
            seen["state"] = page.inner_text(f"{row} .state")
            stored = f'#files tr[data-name="{source.name}"]'
            page.wait_for_selector(stored)
            seen["tableSHA"] = page.inner_text(f"{stored} td.sha")
            seen["errors"] = errors
        finally:
            browser.close()
    return seen


class BrowserResumeTests(TestCase):
    timeout = 300

    setUp = BrowserTests.setUp

    async def test_networkCutResumes(self) -> None:
        """
        The page sends with tus: when the network drops its connection
        half-way, it resumes from the backend's offset, sending only the
        rest, and the stored file is the source.
        """
        storage = Path(self.mktemp()) / "uploads"
        source, sha = sharedFile(64 * MiB)
        backend, proxy = await startStack(
            self, storage, backendArgs=["--debug-write-rate", str(64 * MiB)]
        )
        cutter = Cutter(proxy.port, 24 * MiB)
        self.addCleanup(cutter.listening.stopListening)
        seen = await deferToThread(cutScenario, cutter.url + "/", source)
        self.assertEqual(seen["errors"], [])
        self.assertEqual(seen["state"], "Stored")
        self.assertEqual(seen["tableSHA"], sha)
        self.assertTrue(cutter.done)
        logged = patches(backend)
        self.assertEqual(sum(received for _, received, _, _ in logged), 64 * MiB, logged)
        self.assertTrue(any(offset > 0 for offset, _, _, _ in logged), logged)
        print(f"\nPATCHes (offset, received, kept, outcome): {logged}")


def tokenScenario(url: str, token: str, small: Path) -> dict[str, Any]:
    """Runs in a thread: the page asks for the token, then works with it."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("#auth:not([hidden])", timeout=10000)
            seen["message"] = page.inner_text("#message")
            page.fill("#token", token)
            page.click("#token-form button")
            page.wait_for_selector("#empty:not([hidden])", timeout=10000)
            seen["authHidden"] = page.is_hidden("#auth")
            page.set_input_files("#picker", str(small))
            page.wait_for_selector(f'li.upload[data-name="{small.name}"].done', timeout=60000)
            page.wait_for_selector(f'#files tr[data-name="{small.name}"]', timeout=10000)
            seen["stored"] = True
            seen["errors"] = errors
        finally:
            browser.close()
    return seen


class BrowserTokenTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        BrowserTests.setUp(self)  # type: ignore[arg-type]

    async def test_pageAsksForToken(self) -> None:
        """
        With --tokens-file the page shows its token prompt, and once given
        the token it lists and uploads.
        """
        folder = Path(self.mktemp())
        folder.mkdir()
        tokens = folder / "tokens"
        tokens.write_text("page-token-31337\n")
        small, sha = sharedFile(4 * MiB)
        backend, proxy = await startStack(
            self, folder / "uploads", proxyArgs=["--tokens-file", str(tokens)])
        seen = await deferToThread(tokenScenario, proxy.url + "/", "page-token-31337", small)
        self.assertEqual(seen["errors"], [])
        self.assertIn("token", seen["message"].lower())
        self.assertTrue(seen["authHidden"])
        self.assertTrue(seen["stored"])
        self.assertEqual(sha256File(folder / "uploads" / small.name), sha)


def loadScenario(url: str) -> dict[str, Any]:
    """Runs in a thread: open the page and wait for it to settle."""
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {"console": [], "failed": [], "icons": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: seen["console"].append(m.text)
                    if m.type == "error" else None)
            page.on("pageerror", lambda e: seen["console"].append(str(e)))

            def answered(response: Any) -> None:
                if response.status >= 400:
                    seen["failed"].append((response.status, response.url))
                if "favicon" in response.url:
                    seen["icons"].append((response.status, response.url))

            page.on("response", answered)
            page.goto(url)
            page.wait_for_selector("#empty:not([hidden])")
            # Chromium asks for the page's icon once the page has loaded.
            page.wait_for_function("document.readyState === 'complete'")
            page.wait_for_load_state("networkidle")
        finally:
            browser.close()
    return seen


class PageTests(TestCase):
    timeout = 120

    setUp = BrowserTests.setUp

    async def test_loadsCleanly(self) -> None:
        """
        The page loads with no console error and no failed request: before
        it had an icon, Chromium logged the 404 of C{/favicon.ico}.
        """
        _, proxy = await startStack(self, Path(self.mktemp()) / "uploads")
        seen = await deferToThread(loadScenario, proxy.url + "/")
        self.assertEqual(seen["console"], [])
        self.assertEqual(seen["failed"], [])
        self.assertEqual([status for status, _ in seen["icons"]], [200])


class IconTests(TestCase):
    timeout = 60

    async def test_icon(self) -> None:
        """
        The icon is served at C{/static/favicon.svg}, which the page names,
        and at C{/favicon.ico}, which browsers ask for on their own.
        """
        _, proxy = await startStack(self, Path(self.mktemp()) / "uploads")
        page = (await call("GET", proxy.url + "/"))[2]
        self.assertIn(b'<link rel="icon" href="/static/favicon.svg"', page)
        for path in ["/static/favicon.svg", "/favicon.ico"]:
            code, headers, body = await call("GET", proxy.url + path)
            self.assertEqual(code, 200, path)
            self.assertEqual(headers["content-type"], "image/svg+xml")
            self.assertTrue(body.startswith(b"<svg "), body[:40])


def signedScenario(link: str, small: Path, tooBig: str, crossOrigin: tuple[str, str]
                   ) -> dict[str, Any]:
    """
    Runs in a thread: the page opened with a signed link uploads C{small};
    with C{tooBig} (a link whose sr-max-size is under C{small}'s size) it
    refuses before sending; and a page on another origin C{fetch}es a PUT
    to a signed URL (C{crossOrigin}: that page's URL, the signed URL).
    """
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(link)
            page.wait_for_selector("#grant:not([hidden])", timeout=10000)
            seen["grantText"] = page.inner_text("#grant")
            seen["filesHidden"] = page.is_hidden("#files-section")
            page.set_input_files("#picker", str(small))
            page.wait_for_selector("li.upload.done, li.upload.failed", timeout=60000)
            seen["state"] = page.inner_text("li.upload .state")
            seen["rowName"] = page.get_attribute("li.upload", "data-name")
            seen["rowSHA"] = page.get_attribute("li.upload", "data-sha256")

            page.goto(tooBig)
            page.wait_for_selector("#grant:not([hidden])", timeout=10000)
            page.set_input_files("#picker", str(small))
            page.wait_for_selector("#message:not([hidden])", timeout=10000)
            seen["tooBigMessage"] = page.inner_text("#message")
            seen["tooBigRows"] = page.locator("li.upload").count()

            origin, url = crossOrigin
            page.goto(origin)
            seen["crossOrigin"] = page.evaluate(
                """async (url) => {
                  const body = new Uint8Array(1 << 20);
                  for (let i = 0; i < body.length; i++) body[i] = i % 251;
                  const response = await fetch(url, {
                    method: "PUT", body,
                    headers: {"Content-Type": "application/octet-stream"},
                  });
                  return {status: response.status, body: await response.text()};
                }""",
                url,
            )
            seen["errors"] = errors
        finally:
            browser.close()
    return seen


class BrowserSignedTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        BrowserTests.setUp(self)  # type: ignore[arg-type]

    async def test_signedLink(self) -> None:
        """
        With --tokens-file set, a person given a signed link uploads one file
        through the page without a token, stored under the link's name with
        the source's SHA-256; a file over the link's size is refused in the
        page; a page on another origin PUTs to a signed URL with fetch.
        """
        import hashlib

        from streamrelay.grants import signURL
        from streamrelay.grants.cli import pageLink

        folder = Path(self.mktemp())
        folder.mkdir()
        (folder / "tokens").write_text("page-token-31337\n")
        keys = folder / "keys"
        keys.write_text("app-key a-long-enough-secret-0123456789\n")
        secret = "a-long-enough-secret-0123456789"
        small, sha = sharedFile(4 * MiB)
        _, proxy = await startStack(self, folder / "uploads", proxyArgs=[
            "--tokens-file", str(folder / "tokens"), "--grant-keys-file", str(keys),
            "--cors-origin", "*",
        ])
        link = pageLink(signURL(proxy.url + "/files/from link.bin", "app-key", secret, "PUT",
                                expiresIn=600, maxSize=4 * MiB))
        tooBig = pageLink(signURL(proxy.url + "/files/big.bin", "app-key", secret, "PUT",
                                  expiresIn=600, maxSize=MiB))
        crossOrigin = (
            f"http://localhost:{proxy.port}/healthz",
            signURL(proxy.url + "/files/cors.bin", "app-key", secret, "PUT", expiresIn=600),
        )
        seen = await deferToThread(signedScenario, link, small, tooBig, crossOrigin)
        self.assertEqual(seen["errors"], [])
        self.assertIn("from link.bin", seen["grantText"])
        self.assertTrue(seen["filesHidden"])
        self.assertEqual((seen["state"], seen["rowName"]), ("Stored", "from link.bin"))
        self.assertEqual(seen["rowSHA"], sha)
        self.assertEqual(sha256File(folder / "uploads" / "from link.bin"), sha)
        self.assertIn("at most 1", seen["tooBigMessage"])
        self.assertEqual(seen["tooBigRows"], 0)
        self.assertFalse((folder / "uploads" / "big.bin").exists())
        self.assertEqual(seen["crossOrigin"]["status"], 201, seen["crossOrigin"])
        expected = hashlib.sha256(bytes(i % 251 for i in range(1 << 20))).hexdigest()
        self.assertEqual(sha256File(folder / "uploads" / "cors.bin"), expected)
