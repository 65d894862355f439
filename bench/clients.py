"""
The clients a benchmark drives: curl uploads (one transfer, or many in
parallel from one curl process), C{streamrelay-upload}, and curl downloads
(timed into C{/dev/null}, or hashed as they arrive); and the check of each
server answer against the source file.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services import BIN

CURL = "curl"

#: How long one client invocation may take before it is killed.
CLIENT_TIMEOUT = 3600.0

_WRITE_OUT = r"%{url_effective}\t%{http_code}\t%{time_total}\t%{size_upload}\t%{errormsg}\n"
_DOWNLOAD_OUT = r"%{http_code}\t%{time_total}\t%{size_download}\t%{errormsg}\n"
_UPLOADER_LINE = re.compile(r"(stored|replaced) (.*): (\d+) bytes, sha256 ([0-9a-f]{64})")


@dataclass
class Transfer:
    """One upload as the client saw it."""

    name: str
    status: int
    seconds: float
    answer: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Batch:
    """One client invocation: its wall-clock time (start to exit) and transfers."""

    seconds: float
    transfers: list[Transfer]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run(argv: list[str], stdout: Path, stderr: Path) -> tuple[int, float]:
    """Run C{argv} to its end; return its exit code and wall-clock seconds."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            code = process.wait(CLIENT_TIMEOUT)
        except BaseException:
            process.kill()
            process.wait()
            raise
        return code, time.perf_counter() - started


def curlUploads(
    baseURL: str, source: Path, names: Sequence[str], parallel: int, workDir: Path,
    jsonAnswers: bool = True,
) -> Batch:
    """
    PUT C{source} under each of C{names} with C{curl -T} (Content-Length),
    C{parallel} at a time from one curl process; a single name is a plain
    C{curl -T}.  Each answer is read as JSON unless C{jsonAnswers} is false
    (a server that answers otherwise, such as nginx's WebDAV module).
    """
    answers = workDir / "answers"
    answers.mkdir(parents=True, exist_ok=True)
    lines = [f"write-out = {_quote(_WRITE_OUT)}"]
    if len(names) > 1:
        lines += ["parallel", f"parallel-max = {parallel}"]
    for name in names:
        lines += [
            f"upload-file = {_quote(str(source))}",
            f"output = {_quote(str(answers / (name + '.json')))}",
            f"url = {_quote(baseURL + '/files/' + name)}",
        ]
    config = workDir / "curl.config"
    config.write_text("\n".join(lines) + "\n")
    stdout, stderr = workDir / "curl.out", workDir / "curl.err"
    code, seconds = _run(
        [CURL, "--silent", "--show-error", "--config", str(config)], stdout, stderr
    )
    byName: dict[str, Transfer] = {}
    for line in stdout.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 4:
            continue
        name = fields[0].rpartition("/")[2]
        transfer = Transfer(name, int(fields[1]), float(fields[2]))
        if len(fields) > 4 and fields[4]:
            transfer.error = fields[4]
        answerPath = answers / (name + ".json")
        if jsonAnswers:
            try:
                transfer.answer = json.loads(answerPath.read_bytes())
            except (OSError, ValueError) as e:
                transfer.error = transfer.error or f"no JSON answer ({e})"
        answerPath.unlink(missing_ok=True)
        byName[name] = transfer
    transfers = []
    for name in names:
        if name not in byName:
            why = stderr.read_text(errors="replace").strip() or f"curl exited {code}"
            byName[name] = Transfer(name, 0, 0.0, error=why)
        transfers.append(byName[name])
    return Batch(seconds, transfers)


def uploaderUpload(baseURL: str, source: Path, workDir: Path) -> Batch:
    """Upload C{source} (under its own name) with C{streamrelay-upload}."""
    output = workDir / "uploader.out"
    code, seconds = _run(
        [str(BIN / "streamrelay-upload"), "--url", baseURL, str(source)], output, output
    )
    text = output.read_text(errors="replace")
    match = _UPLOADER_LINE.search(text)
    if code != 0 or match is None:
        why = text.strip().splitlines()[-1:] or [f"exit status {code}"]
        return Batch(seconds, [Transfer(source.name, 0, seconds, error=why[0])])
    verb, name, size, sha256 = match.groups()
    answer = {"name": name, "size": int(size), "sha256": sha256}
    return Batch(seconds, [Transfer(name, 201 if verb == "stored" else 200, seconds, answer)])


def uploaderStartup() -> float:
    """Seconds C{streamrelay-upload --help} takes: its interpreter and import cost."""
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "streamrelay-upload"), "--help"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
    )
    return time.perf_counter() - started


def curlDownload(url: str, workDir: Path) -> Transfer:
    """
    GET C{url} with C{curl -o /dev/null}: the client reads every byte and
    keeps none, so only the servers and the loopback are measured.  The
    transfer's C{seconds} is curl's wall clock, start to exit; its answer is
    C{{"size": bytes received}}.
    """
    stdout, stderr = workDir / "curl.out", workDir / "curl.err"
    code, seconds = _run(
        [CURL, "--silent", "--show-error", "--output", "/dev/null",
         "--write-out", _DOWNLOAD_OUT, url],
        stdout, stderr,
    )
    name = url.rpartition("/")[2]
    fields = stdout.read_text(errors="replace").rstrip("\n").split("\t")
    if len(fields) < 4:
        why = stderr.read_text(errors="replace").strip() or f"curl exited {code}"
        return Transfer(name, 0, seconds, error=why)
    transfer = Transfer(name, int(fields[0]), seconds, {"size": int(float(fields[2]))})
    if code != 0 or fields[3]:
        transfer.error = fields[3] or f"curl exited {code}"
    return transfer


def curlDownloadSHA256(url: str) -> Transfer:
    """
    GET C{url} with C{curl -o -}, hashing the bytes as they arrive (nothing
    is written to disk); the answer is C{{"size": ..., "sha256": ...}}.  Not
    timed: hashing in the benchmark's process competes for the CPU.
    """
    name = url.rpartition("/")[2]
    digest = hashlib.sha256()
    size = 0
    started = time.perf_counter()
    process = subprocess.Popen(
        [CURL, "--silent", "--show-error", "--fail", "--output", "-", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        while chunk := process.stdout.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        why = process.stderr.read().decode(errors="replace").strip()
        code = process.wait(CLIENT_TIMEOUT)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        process.stdout.close()
        process.stderr.close()
    seconds = time.perf_counter() - started
    if code != 0:
        return Transfer(name, 0, seconds, error=why or f"curl exited {code}")
    return Transfer(name, 200, seconds, {"size": size, "sha256": digest.hexdigest()})


def check(batch: Batch, size: int, sha256: str) -> list[str]:
    """Errors in C{batch}: a failed transfer, or an answer not matching the source."""
    errors = []
    for t in batch.transfers:
        answer = t.answer or {}
        if t.error:
            errors.append(f"{t.name}: {t.error}")
        elif t.status not in (200, 201):
            errors.append(f"{t.name}: HTTP {t.status} {answer}")
        elif answer.get("sha256") != sha256:
            errors.append(f"{t.name}: sha256 {answer.get('sha256')} != source {sha256}")
        elif answer.get("size") != size or answer.get("name") != t.name:
            errors.append(f"{t.name}: answer {answer} does not describe the file sent")
    return errors


def checkDownload(t: Transfer, size: int, sha256: str | None = None) -> list[str]:
    """
    Errors in a download: a failed transfer, a status other than 200, a
    size other than the source's, or (when given) another SHA-256.
    """
    answer = t.answer or {}
    if t.error:
        return [f"{t.name}: {t.error}"]
    if t.status != 200:
        return [f"{t.name}: HTTP {t.status}"]
    if answer.get("size") != size:
        return [f"{t.name}: {answer.get('size')} bytes received, the source has {size}"]
    if sha256 is not None and answer.get("sha256") != sha256:
        return [f"{t.name}: sha256 {answer.get('sha256')} != source {sha256}"]
    return []
