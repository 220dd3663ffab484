"""Open the built site in a real browser and fail on what a reader would see broken.

    python -m sphinx -W -b html docs docs/_build/html && python docs/check_site.py [--site DIR] [--out DIR]

Serves the site with ``python -m http.server`` on 127.0.0.1, opens every page reachable from ``index.html`` in
headless chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) and fails on any console
error, any internal link whose page or anchor does not exist, and any image that did not load
(``naturalWidth == 0``). Saves screenshots of the landing page and of the fine-tuning notebook's training plot.
Without chromium it prints that it was skipped and exits 0 (``--require-browser``: exit 2 instead).

Before the browser (and without one) it reads the text of every built page and fails on an en dash or em dash
directly before a flag name (``–train``): a ``--`` that typography turned into a dash, which fails in a shell.
"""
from __future__ import annotations

import argparse
import contextlib
import html.parser
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from pathlib import Path

DOCS = Path(__file__).resolve().parent
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
DRIVERS = ('chromedriver', '/usr/lib/chromium/chromedriver')
# The page and the output that hold the fine-tuning notebook's training curves (the first figure it draws).
PLOT_PAGE = 'notebooks/bert_finetuning.html'


class _Anchors(html.parser.HTMLParser):
    """The ids and names a page defines (link targets)."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ('id', 'name') and value:
                self.ids.add(value)


class _Text(html.parser.HTMLParser):
    """The text a reader sees on a page (not scripts or styles)."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ('script', 'style'):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ('script', 'style') and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


# An en dash or em dash, not inside a word, directly before a flag-like name: "–train", "—warmup-ratio".
DASHED_FLAG = re.compile(r'(?<![\w\-\u2013\u2014])([\u2013\u2014])([A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*)')


def dashed_flags(site: Path) -> list[str]:
    """One line for every en or em dash directly before a flag name in the text of a page of ``site``."""
    problems = []
    for page in sorted(site.rglob('*.html')):
        parser = _Text()
        parser.feed(page.read_text(encoding='utf-8', errors='replace'))
        for match in DASHED_FLAG.finditer(''.join(parser.parts)):
            kind = 'en dash' if match.group(1) == '\u2013' else 'em dash'
            problems.append(f'{page.relative_to(site).as_posix()}: "{match.group(0)}": an {kind} before a flag '
                            f'name (write --{match.group(2)}; is smartquotes on in docs/conf.py?)')
    return problems


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(site: Path):
    port = _free_port()
    server = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1',
                               '--directory', str(site)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}/'
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                urllib.request.urlopen(base, timeout=1).close()
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f'http.server did not start on port {port}')
        yield base
    finally:
        server.terminate()
        server.wait()


def _find(names) -> str | None:
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = _find(BROWSERS)
    for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--window-size=1280,900', '--hide-scrollbars'):
        options.add_argument(arg)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    return webdriver.Chrome(service=Service(_find(DRIVERS)), options=options)


def _fetch(url: str, cache: dict) -> tuple[int, str]:
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
                cache[url] = (response.status, body.decode('utf-8', 'replace')
                              if response.headers.get_content_type() == 'text/html' else '')
        except urllib.error.HTTPError as err:
            cache[url] = (err.code, '')
    return cache[url]


def check(site: Path, out: Path) -> list[str]:
    """Every problem found, as one line each; screenshots go to ``out``."""
    problems: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    fetched: dict = {}
    with serve(site) as base, contextlib.closing(browser()) as driver:
        driver.set_page_load_timeout(30)
        queue, seen = deque([base + 'index.html']), {base + 'index.html'}
        pages = 0
        while queue:
            url = queue.popleft()
            page = url[len(base):]
            driver.get(url)
            pages += 1
            # Wait for every image to finish loading (or fail) before judging it.
            broken = driver.execute_async_script("""
                const done = arguments[arguments.length - 1];
                const images = Array.from(document.images);
                Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })))
                  .then(() => done(images.filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'))));
            """)
            problems += [f'{page}: image did not load: {src}' for src in broken]
            for entry in driver.get_log('browser'):
                if entry['level'] == 'SEVERE':
                    problems.append(f"{page}: console error: {entry['message']}")
            links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]'))"
                                          ".map(a => a.href)")
            for link in links:
                target, _, fragment = link.partition('#')
                if not target.startswith(base):
                    continue  # external links are not followed: the site must work offline
                status, body = _fetch(target, fetched)
                if status != 200:
                    problems.append(f'{page}: broken link to {target[len(base):]} (HTTP {status})')
                    continue
                if fragment and body:
                    parser = _Anchors()
                    parser.feed(body)
                    if urllib.parse.unquote(fragment) not in parser.ids:
                        problems.append(f'{page}: link to a missing anchor: {target[len(base):]}#{fragment}')
                if body and target not in seen and target.endswith('.html'):
                    seen.add(target)
                    queue.append(target)
            if page == 'index.html':
                driver.save_screenshot(str(out / 'landing.png'))
            if page == PLOT_PAGE:
                problems += _screenshot_plot(driver, out)
        if base + PLOT_PAGE not in seen:
            problems.append(f'{PLOT_PAGE} is not reachable from index.html')
    print(f'checked {pages} pages and {len(fetched)} link targets')
    return problems


def _screenshot_plot(driver, out: Path) -> list[str]:
    from selenium.webdriver.common.by import By
    images = driver.find_elements(By.CSS_SELECTOR, 'article img')
    if not images:
        return [f'{PLOT_PAGE}: the notebook shows no figure (its stored outputs lost the training plot?)']
    plot = images[0]
    # The window's screenshot shows the plot in its page: scroll so that it sits near the top.
    driver.execute_script('window.scrollTo({top: arguments[0].getBoundingClientRect().top + window.scrollY - 120, '
                          'behavior: "instant"});', plot)  # the theme scrolls smoothly otherwise
    time.sleep(0.5)
    driver.save_screenshot(str(out / 'finetuning_notebook.png'))
    plot.screenshot(str(out / 'finetuning_training_plot.png'))
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--site', default=str(DOCS / '_build' / 'html'), help='the built site')
    parser.add_argument('--out', default=str(DOCS / 'check_site_screenshots'), help='where screenshots go')
    parser.add_argument('--require-browser', action='store_true', help='fail (exit 2) when chromium is missing')
    args = parser.parse_args()
    site = Path(args.site)
    if not (site / 'index.html').is_file():
        print(f'error: {site}/index.html does not exist: build the site first '
              '(python -m sphinx -W -b html docs docs/_build/html)', file=sys.stderr)
        return 2
    problems = dashed_flags(site)
    missing = [what for what, names in (('chromium', BROWSERS), ('chromedriver', DRIVERS)) if not _find(names)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append('selenium (pip install -e ".[docs]")')
    if missing:
        print(f"browser check skipped: {', '.join(missing)} not installed "
              '(apt-get install chromium chromium-driver)')
        for problem in problems:
            print(problem)
        if problems:
            print(f'error: {len(problems)} problem(s) in the site', file=sys.stderr)
            return 1
        return 2 if args.require_browser else 0
    problems += check(site, Path(args.out))
    for problem in problems:
        print(problem)
    if problems:
        print(f'error: {len(problems)} problem(s) in the site', file=sys.stderr)
        return 1
    print(f'site OK; screenshots in {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
