"""code_analysis: line counts per language, Python complexity and secret scanning of a source tree.

Lines are classified code / comment / blank with each language's line and block comment
syntax (a line with any code on it is code). Python functions are measured with PyCQA's
``mccabe`` (the same graph flake8's C901 uses); files that do not parse are reported, not
fatal. Secrets are found with per-provider patterns (AWS, GitHub, Slack, Stripe, Google,
private keys, JWTs), connection URLs with inline passwords, and ``password = "..."``-style
assignments whose value looks random. A secret never leaves this module: results carry
its file, line, rule and a redacted preview (at most its first and last four characters).
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import mccabe
from pydantic import BaseModel, Field, field_validator

from amas.registry import AgentContext, AgentInputError, AgentResult, Finding, Severity, resolve_input_path

DEFAULT_EXCLUDES = [".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
                    ".pytest_cache", ".ruff_cache", ".tox", ".nox", "*.egg-info", ".dvc/cache"]
BINARY_SNIFF = 8192


@dataclass(frozen=True)
class Language:
    name: str
    line_comments: tuple[str, ...] = ()
    block_comments: tuple[tuple[str, str], ...] = ()
    quotes: str = ""
    """Characters that open a one-line string, inside which comment markers do not count."""


_C_STYLE = dict(line_comments=("//",), block_comments=(("/*", "*/"),), quotes="\"'")
_HASH = dict(line_comments=("#",), quotes="\"'")
_MARKUP = dict(block_comments=(("<!--", "-->"),))

PYTHON = Language("Python", **_HASH)
LANGUAGES_BY_EXTENSION: dict[str, Language] = {}
for _language, _extensions in (
    (PYTHON, ("py", "pyi", "pyw")),
    (Language("JavaScript", line_comments=("//",), block_comments=(("/*", "*/"),), quotes="\"'`"),
     ("js", "mjs", "cjs", "jsx")),
    (Language("TypeScript", line_comments=("//",), block_comments=(("/*", "*/"),), quotes="\"'`"),
     ("ts", "tsx", "mts", "cts")),
    (Language("Go", line_comments=("//",), block_comments=(("/*", "*/"),), quotes="\"'`"), ("go",)),
    # Rust's ' also starts lifetimes ('a), so only " opens a string here.
    (Language("Rust", line_comments=("//",), block_comments=(("/*", "*/"),), quotes='"'), ("rs",)),
    (Language("Java", **_C_STYLE), ("java",)),
    (Language("Kotlin", **_C_STYLE), ("kt", "kts")),
    (Language("C#", **_C_STYLE), ("cs",)),
    (Language("Swift", **_C_STYLE), ("swift",)),
    (Language("C", **_C_STYLE), ("c", "h")),
    (Language("C++", **_C_STYLE), ("cc", "cpp", "cxx", "c++", "hpp", "hh", "hxx", "ipp", "inl")),
    (Language("Protocol Buffers", **_C_STYLE), ("proto",)),
    (Language("PHP", line_comments=("//", "#"), block_comments=(("/*", "*/"),), quotes="\"'"), ("php",)),
    (Language("Shell", **_HASH), ("sh", "bash", "zsh", "ksh")),
    (Language("PowerShell", line_comments=("#",), block_comments=(("<#", "#>"),), quotes="\"'"), ("ps1", "psm1")),
    (Language("Ruby", **_HASH), ("rb",)),
    (Language("Perl", **_HASH), ("pl", "pm")),
    (Language("Lua", line_comments=("--",), block_comments=(("--[[", "]]"),), quotes="\"'"), ("lua",)),
    (Language("YAML", **_HASH), ("yml", "yaml")),
    (Language("TOML", **_HASH), ("toml",)),
    (Language("INI", line_comments=(";", "#")), ("ini", "cfg")),
    (Language("JSON"), ("json", "jsonl", "geojson")),
    (Language("Markdown", **_MARKUP), ("md", "markdown")),
    (Language("SQL", line_comments=("--",), block_comments=(("/*", "*/"),), quotes="\"'"), ("sql",)),
    (Language("HTML", **_MARKUP), ("html", "htm", "xhtml", "jinja", "j2")),
    (Language("XML", **_MARKUP), ("xml", "xsd", "xsl", "svg")),
    (Language("CSS", block_comments=(("/*", "*/"),), quotes="\"'"), ("css",)),
    (Language("SCSS", **_C_STYLE), ("scss", "less")),
    (Language("Terraform", line_comments=("#", "//"), block_comments=(("/*", "*/"),), quotes='"'), ("tf", "hcl")),
):
    for _extension in _extensions:
        LANGUAGES_BY_EXTENSION[_extension] = _language
LANGUAGES_BY_NAME = {"Dockerfile": Language("Dockerfile", **_HASH), "Makefile": Language("Makefile", **_HASH),
                     "GNUmakefile": Language("Makefile", **_HASH), "makefile": Language("Makefile", **_HASH),
                     "Jenkinsfile": Language("Groovy", **_C_STYLE), "CMakeLists.txt": Language("CMake", **_HASH)}
_SHEBANGS = (("python", "py"), ("bash", "sh"), ("zsh", "sh"), ("/sh", "sh"), ("env sh", "sh"), ("node", "js"),
             ("ruby", "rb"), ("perl", "pl"))


def language_of(path: Path, first_line: str = "") -> Language | None:
    """The language by file name or extension; extension-less scripts by their ``#!`` line."""
    by_name = LANGUAGES_BY_NAME.get(path.name)
    if by_name is not None:
        return by_name
    extension = path.suffix.lower().lstrip(".")
    if extension:
        return LANGUAGES_BY_EXTENSION.get(extension)
    if first_line.startswith("#!"):
        for marker, mapped in _SHEBANGS:
            if marker in first_line:
                return LANGUAGES_BY_EXTENSION[mapped]
    return None


@dataclass
class LineCounts:
    code: int = 0
    comment: int = 0
    blank: int = 0


def count_lines(text: str, language: Language) -> LineCounts:
    """Code, comment and blank lines. A line with code and a comment is code; strings and block
    comments are followed across a line, block comments across lines (strings are assumed one-line)."""
    counts = LineCounts()
    markers = [*language.line_comments, *(start for start, _ in language.block_comments)]
    block_end: str | None = None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        stripped = line.strip()
        if not stripped:
            counts.blank += 1
            continue
        if block_end is None:
            # Fast paths: most lines have no comment marker at all, or are a whole-line comment.
            if not any(marker in line for marker in markers):
                counts.code += 1
                continue
            if stripped.startswith(language.line_comments) and not stripped.startswith(
                    tuple(start for start, _ in language.block_comments)):
                counts.comment += 1
                continue
        has_code, block_end = _scan(line, language, block_end)
        if has_code:
            counts.code += 1
        else:
            counts.comment += 1
    return counts


def _scan(line: str, language: Language, block_end: str | None) -> tuple[bool, str | None]:
    """Whether ``line`` has code outside comments, and the block terminator still open at its end."""
    has_code = False
    quote: str | None = None
    i, size = 0, len(line)
    while i < size:
        if block_end is not None:
            end = line.find(block_end, i)
            if end < 0:
                return has_code, block_end
            i, block_end = end + len(block_end), None
            continue
        char = line[i]
        if quote is not None:
            if char == "\\":
                i += 2
                continue
            if char == quote:
                quote = None
            i += 1
            continue
        if char.isspace():
            i += 1
            continue
        opened = next((pair for pair in language.block_comments if line.startswith(pair[0], i)), None)
        if opened is not None:
            block_end = opened[1]
            i += len(opened[0])
            continue
        if line.startswith(language.line_comments, i):
            return has_code, None
        has_code = True
        if char in language.quotes:
            quote = char
        i += 1
    return has_code, block_end


class _EveryGraph(dict):
    """mccabe keeps its graphs in a dict keyed by name, so a property's getter and setter (one name)
    would keep only the last; this keeps every graph in order."""

    def __init__(self) -> None:
        super().__init__()
        self.every: list[mccabe.PathGraph] = []

    def __setitem__(self, key: str, graph: mccabe.PathGraph) -> None:
        self.every.append(graph)


def function_complexity(source: bytes | str, filename: str) -> list[tuple[str, int, int]]:
    """``(qualified name, line, McCabe complexity)`` of every function and method in ``source``.

    Raises SyntaxError (or ValueError, RecursionError) when the source does not parse.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. invalid escape sequences: the code's problem, not ours
        tree = compile(source, filename, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    visitor = mccabe.PathGraphingAstVisitor()
    visitor.graphs = _EveryGraph()
    visitor.preorder(tree, visitor)
    # Module-level if/for blocks get graphs too; theirs is named like their entity, a function's is not.
    return [(graph.entity, graph.lineno, graph.complexity()) for graph in visitor.graphs.every
            if graph.name != graph.entity]


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text``: how random a value looks (hex ~4, base64 ~5-6, words ~3)."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


def redact(secret: str) -> str:
    """At most the first and last 4 characters (a fifth of the length each), the rest masked:
    ``AKIA************WXYZ``; values shorter than 16 characters are masked whole."""
    keep = min(4, len(secret) // 5) if len(secret) >= 16 else 0
    hidden = len(secret) - 2 * keep
    return secret[:keep] + "*" * min(hidden, 24) + (secret[-keep:] if keep else "")


_PLACEHOLDER_MARKERS = ("${", "{{", "{", "<", ">", "%(", "%s", "$(", "xxxx", "****", "....", "changeme", "change_me",
                        "change-me", "placeholder", "example", "dummy", "your_", "your-", "redacted", "replace",
                        "secret_here", "notreal", "not_real", "fake")
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")
_PATH_PREFIXES = ("./", "../", "~/", "/etc/", "/run/", "/var/", "/home/", "/tmp/", "file:")
MIN_GENERIC_ENTROPY = 3.0
MIN_GENERIC_LENGTH = 8


def looks_like_placeholder(value: str) -> bool:
    lowered = value.lower()
    return (any(marker in lowered for marker in _PLACEHOLDER_MARKERS) or bool(_ENV_NAME.match(value))
            or value.startswith(_PATH_PREFIXES) or len(set(value)) <= 2
            or lowered in {"password", "passwd", "secret", "pass", "pwd", "none", "null", "true", "false"})


def _random_enough(value: str) -> bool:
    return (len(value) >= MIN_GENERIC_LENGTH and not looks_like_placeholder(value)
            and shannon_entropy(value) >= MIN_GENERIC_ENTROPY)


_SECRET_WORDS = (("password",), ("passwd",), ("passphrase",), ("pwd",), ("pass",), ("secret",), ("api", "key"),
                 ("apikey",), ("access", "key"), ("secret", "key"), ("private", "key"), ("auth", "token"),
                 ("access", "token"), ("refresh", "token"), ("token",), ("credentials",), ("credential",))
_NOT_SECRET_SUFFIXES = {"type", "name", "field", "label", "length", "len", "min", "max", "prompt", "hint", "url",
                        "uri", "endpoint", "file", "path", "env", "id", "header", "param", "regex", "pattern",
                        "policy", "format", "expiry", "expires", "ttl", "hash", "count", "dir", "key"}


def is_secret_name(name: str) -> bool:
    """Whether a variable or key name says it holds a secret: ``db_password``, ``apiKey``, ``AUTH_TOKEN``,
    but not ``tokenizer``, ``password_field`` or ``secret_name``."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    if not words or (words[-1] in _NOT_SECRET_SUFFIXES and tuple(words[-2:]) not in _SECRET_WORDS):
        return False
    return any(tuple(words[i:i + len(k)]) == k for k in _SECRET_WORDS for i in range(len(words) - len(k) + 1))


@dataclass(frozen=True)
class SecretRule:
    id: str
    title: str
    severity: Severity
    pattern: re.Pattern[str]
    keywords: tuple[str, ...]
    """The pattern runs only on lines containing one of these (case-insensitive): a cheap prefilter."""
    accept: Callable[[re.Match[str]], bool] | None = None
    """Extra test on a match (randomness, placeholders, variable name)."""
    preview: Callable[[re.Match[str]], str] | None = None
    """How to show a match; by default the redacted ``secret`` group."""
    config_only: bool = False
    """Only in configuration files (.env, .ini, YAML...), where unquoted values are literal."""


def _accept_assignment(match: re.Match[str]) -> bool:
    return is_secret_name(match["name"]) and _random_enough(match["secret"])


def _accept_url(match: re.Match[str]) -> bool:
    secret = match["secret"]
    return not looks_like_placeholder(secret) and secret.lower() not in {"pass", "password", "pw", "passwd", "secret"}


def _preview_url(match: re.Match[str]) -> str:
    return f"{match['scheme']}://{match['user']}:{redact(match['secret'])}@{match['host']}"


_ASSIGN = r"""["']?\s*(?::=|=>|==|=|:)\s*"""
_NAME = r"(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,80})"
SECRET_RULES: tuple[SecretRule, ...] = (
    SecretRule("private-key", "Private key block", Severity.critical,
               re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"), ("private key",),
               preview=lambda m: m.group(0)),
    SecretRule("aws-access-key-id", "AWS access key id", Severity.critical,
               re.compile(r"(?<![A-Z0-9])(?P<secret>(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?![A-Z0-9])"),
               ("akia", "asia", "abia", "acca")),
    SecretRule("aws-secret-access-key", "AWS secret access key", Severity.critical,
               re.compile(r"(?i)(?<![a-z0-9])(?P<name>aws_?(?:secret_?(?:access_?)?key|secret))" + _ASSIGN +
                          r"""[rbu]?["']?(?P<secret>[A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"""), ("aws",)),
    SecretRule("google-api-key", "Google API key", Severity.critical,
               re.compile(r"(?<![A-Za-z0-9_-])(?P<secret>AIza[0-9A-Za-z_-]{35})(?![A-Za-z0-9_-])"), ("aiza",)),
    SecretRule("github-token", "GitHub token", Severity.high,
               re.compile(r"(?<![A-Za-z0-9_])(?P<secret>gh[pousr]_[A-Za-z0-9]{36,255})(?![A-Za-z0-9_])"),
               ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    SecretRule("github-fine-grained-token", "GitHub fine-grained token", Severity.high,
               re.compile(r"(?<![A-Za-z0-9_])(?P<secret>github_pat_[A-Za-z0-9_]{22,255})"), ("github_pat_",)),
    SecretRule("slack-token", "Slack token", Severity.high,
               re.compile(r"(?<![A-Za-z0-9-])(?P<secret>xox[a-z]-[A-Za-z0-9-]{10,250})"), ("xox",)),
    SecretRule("slack-webhook", "Slack incoming webhook URL", Severity.high,
               re.compile(r"(?P<secret>https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/"
                          r"[A-Za-z0-9_]+)"), ("hooks.slack.com",)),
    SecretRule("stripe-secret-key", "Stripe live secret key", Severity.high,
               re.compile(r"(?<![A-Za-z0-9_])(?P<secret>(?:sk|rk)_live_[0-9A-Za-z]{16,247})"), ("_live_",)),
    SecretRule("jwt", "JSON Web Token", Severity.high,
               re.compile(r"(?<![A-Za-z0-9_-])(?P<secret>eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\."
                          r"[A-Za-z0-9_-]*)"), ("eyj",)),
    SecretRule("url-password", "Connection URL with an inline password", Severity.high,
               re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{1,30})://(?P<user>[^\s:/?#@'\"]*):"
                          r"(?P<secret>[^\s@/?#'\"]{1,200})@(?P<host>[^\s/?#'\"@]+)"), ("://",),
               accept=_accept_url, preview=_preview_url),
    SecretRule("assigned-secret", "Hard-coded secret", Severity.high,
               re.compile(_NAME + _ASSIGN + r"""[rbuRBU]{0,2}(?P<q>["'])(?P<secret>[^"'\s]{8,300})(?P=q)"""),
               ("pass", "pwd", "secret", "key", "token", "credential"), accept=_accept_assignment),
    SecretRule("assigned-secret", "Hard-coded secret", Severity.high,
               re.compile(r"^\s*(?:export\s+)?" + _NAME + r"\s*[:=]\s*(?P<secret>[^\s\"'#;,]{8,300})\s*(?:[#;].*)?$"),
               ("pass", "pwd", "secret", "key", "token", "credential"), accept=_accept_assignment,
               config_only=True),
)
_CONFIG_EXTENSIONS = frozenset({"env", "ini", "cfg", "conf", "properties", "yaml", "yml", "toml", "npmrc", "pypirc",
                                "netrc", "tfvars"})


def is_config_file(path: Path) -> bool:
    name = path.name.lower()
    return (path.suffix.lower().lstrip(".") in _CONFIG_EXTENSIONS or name.startswith(".env")
            or name in {"credentials", ".npmrc", ".pypirc", ".netrc", ".htpasswd", "config"})


@dataclass(frozen=True)
class SecretMatch:
    line: int
    column: int
    rule: SecretRule
    preview: str
    name: str | None


def find_secrets(text: str, *, config: bool = False) -> Iterator[SecretMatch]:
    """Secrets in ``text``, by line. Where two rules match the same characters, the first rule (the more
    specific) wins. ``config``: the text is a configuration file, where unquoted values count too."""
    for number, line in enumerate(text.split("\n"), start=1):
        lowered = line.lower()
        taken: list[tuple[int, int]] = []
        for rule in SECRET_RULES:
            if (rule.config_only and not config) or not any(k in lowered for k in rule.keywords):
                continue
            for match in rule.pattern.finditer(line):
                span = match.span("secret") if "secret" in rule.pattern.groupindex else match.span()
                if any(start < span[1] and span[0] < end for start, end in taken):
                    continue
                if rule.accept is not None and not rule.accept(match):
                    continue
                taken.append(span)
                preview = rule.preview(match) if rule.preview else redact(match["secret"])
                name = match["name"] if "name" in rule.pattern.groupindex else None
                yield SecretMatch(line=number, column=span[0] + 1, rule=rule, preview=preview, name=name)


class CodeAnalysisInput(BaseModel):
    path: str = Field(description="Source tree (or one file) to analyse; relative paths resolve against the "
                                  "working directory.")
    exclude: list[str] = Field(default_factory=lambda: list(DEFAULT_EXCLUDES),
                               description="Glob patterns matched against each file or directory name and its "
                                           "path relative to the tree (e.g. 'node_modules', '*.min.js', "
                                           "'docs/generated/*').")
    max_file_bytes: int = Field(2 << 20, ge=1, le=1 << 30, description="Skip files larger than this many bytes.")
    max_files: int = Field(50_000, ge=1, le=1_000_000, description="Stop after reading this many files.")
    complexity_threshold: int = Field(10, ge=1, le=1000,
                                      description="Python functions above this McCabe complexity are findings.")
    top_n: int = Field(20, ge=1, le=1000, description="How many of the most complex functions to list.")

    @field_validator("exclude")
    @classmethod
    def _no_empty_patterns(cls, patterns: list[str]) -> list[str]:
        if any(not p.strip() for p in patterns):
            raise ValueError("patterns must not be empty")
        return [p.strip().rstrip("/") for p in patterns]


class LanguageStats(BaseModel):
    language: str
    files: int
    code: int
    comment: int
    blank: int


class FileStats(BaseModel):
    path: str = Field(description="Relative to the analysed tree.")
    language: str
    code: int
    comment: int
    blank: int


class FunctionComplexity(BaseModel):
    file: str
    name: str = Field(description="Qualified as Class.method.")
    line: int
    complexity: int


class ParseError(BaseModel):
    file: str
    line: int | None
    message: str


class SecretHit(BaseModel):
    file: str
    line: int
    column: int
    rule: str
    severity: Severity
    preview: str = Field(description="Redacted: at most the first and last 4 characters of the value.")
    name: str | None = Field(None, description="The variable or key the value is assigned to, when there is one.")


class SkippedFile(BaseModel):
    path: str
    reason: str


class CodeAnalysisOutput(AgentResult):
    root: str
    files_read: int = Field(description="Text files read for counting and secret scanning.")
    languages: list[LanguageStats] = Field(description="Per language, most code first.")
    code_lines: int
    comment_lines: int
    blank_lines: int
    unrecognised_files: int = Field(description="Text files in no known language (still scanned for secrets).")
    binary_files: int
    functions_analysed: int
    complex_functions: int = Field(description="Python functions above complexity_threshold.")
    top_complex: list[FunctionComplexity]
    parse_errors: list[ParseError]
    secrets: list[SecretHit]
    skipped: list[SkippedFile]
    truncated: bool


def _excluded(name: str, relative: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(name, p) or fnmatchcase(relative, p) for p in patterns)


def walk_tree(root: Path, exclude: list[str], skipped: list[SkippedFile]) -> Iterator[tuple[Path, str]]:
    """``(path, path relative to root)`` of regular files under ``root``, sorted, excluded globs pruned.
    Symbolic links are not followed: they may leave the tree or loop."""
    def on_error(exc: OSError) -> None:
        skipped.append(SkippedFile(path=str(exc.filename), reason=f"cannot list directory: {exc.strerror}"))

    for directory, subdirs, names in os.walk(root, onerror=on_error):
        base = Path(directory)
        prefix = base.relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        subdirs[:] = sorted(d for d in subdirs if not _excluded(d, prefix + d, exclude))
        for name in sorted(names):
            relative = prefix + name
            if _excluded(name, relative, exclude):
                continue
            path = base / name
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                skipped.append(SkippedFile(path=relative, reason=f"cannot stat: {exc.strerror}"))
                continue
            if stat.S_ISLNK(mode):
                skipped.append(SkippedFile(path=relative, reason="symbolic link (not followed)"))
            elif stat.S_ISREG(mode):
                yield path, relative


class CodeAnalysis:
    name = "code_analysis"
    description = "Line counts per language, Python McCabe complexity and secret scanning of a source tree."
    Input = CodeAnalysisInput
    Output = CodeAnalysisOutput

    def run(self, params: CodeAnalysisInput, context: AgentContext) -> CodeAnalysisOutput:
        root = self._root(params.path)
        skipped: list[SkippedFile] = []
        if root.is_dir():
            files: Iterator[tuple[Path, str]] = walk_tree(root, params.exclude, skipped)
        else:
            files = iter([(root, root.name)])
        per_language: dict[str, LanguageStats] = {}
        file_stats: list[FileStats] = []
        functions: list[FunctionComplexity] = []
        parse_errors: list[ParseError] = []
        secrets: list[SecretHit] = []
        read = binary = unrecognised = 0
        truncated = False
        for path, relative in files:
            if read >= params.max_files:
                truncated = True
                break
            try:
                size = path.stat().st_size
                if size > params.max_file_bytes:
                    skipped.append(SkippedFile(path=relative, reason=f"larger than max_file_bytes ({size} bytes)"))
                    continue
                data = path.read_bytes()
            except OSError as exc:
                skipped.append(SkippedFile(path=relative, reason=f"cannot read: {exc.strerror or exc}"))
                continue
            if b"\x00" in data[:BINARY_SNIFF]:
                binary += 1
                continue
            read += 1
            text = data.decode("utf-8-sig", errors="replace")
            language = language_of(path, text[:200].split("\n", 1)[0])
            if language is None:
                unrecognised += 1
            else:
                counts = count_lines(text, language)
                file_stats.append(FileStats(path=relative, language=language.name, **vars(counts)))
                stats = per_language.setdefault(
                    language.name, LanguageStats(language=language.name, files=0, code=0, comment=0, blank=0))
                stats.files += 1
                stats.code, stats.comment, stats.blank = (
                    stats.code + counts.code, stats.comment + counts.comment, stats.blank + counts.blank)
                if language is PYTHON:
                    self._complexity(data, relative, functions, parse_errors)
            for found in find_secrets(text, config=is_config_file(path)):
                secrets.append(SecretHit(file=relative, line=found.line, column=found.column, rule=found.rule.id,
                                         severity=found.rule.severity, preview=found.preview, name=found.name))

        languages = sorted(per_language.values(), key=lambda s: (-s.code, s.language))
        ranked = sorted(functions, key=lambda f: (-f.complexity, f.file, f.line))
        complex_functions = [f for f in ranked if f.complexity > params.complexity_threshold]
        findings = self._findings(secrets, complex_functions, parse_errors, params, truncated)
        output = CodeAnalysisOutput(
            agent=self.name, summary="", findings=findings, root=str(root), files_read=read, languages=languages,
            code_lines=sum(s.code for s in languages), comment_lines=sum(s.comment for s in languages),
            blank_lines=sum(s.blank for s in languages), unrecognised_files=unrecognised, binary_files=binary,
            functions_analysed=len(functions), complex_functions=len(complex_functions),
            top_complex=ranked[:params.top_n], parse_errors=parse_errors, secrets=secrets, skipped=skipped,
            truncated=truncated, reads=[str(root)],
        )
        output.summary = self._summary(output, params)
        detail = {**output.model_dump(mode="json", exclude={"evidence", "llm"}),
                  "files": [s.model_dump(mode="json") for s in file_stats],
                  "functions": [f.model_dump(mode="json") for f in ranked]}
        output.evidence = [context.put_evidence(
            "code_analysis.json", json.dumps(detail, indent=2, sort_keys=True).encode(), media_type="application/json",
            description=f"Code analysis of {root}: per-file line counts, every function's complexity, "
                        "secrets (redacted)")]
        return output

    @staticmethod
    def _root(raw: str) -> Path:
        root, info = resolve_input_path(raw, "path", "a source directory or file to analyse")
        mode = info.st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            raise AgentInputError(f"path: {root} is neither a directory nor a regular file")
        if stat.S_ISDIR(mode) and not os.access(root, os.R_OK | os.X_OK):
            raise AgentInputError(f"path: cannot list {root}: permission denied")
        return root

    @staticmethod
    def _complexity(data: bytes, relative: str, functions: list[FunctionComplexity],
                    parse_errors: list[ParseError]) -> None:
        try:
            measured = function_complexity(data, relative)
        except SyntaxError as exc:
            parse_errors.append(ParseError(file=relative, line=exc.lineno, message=exc.msg))
            return
        except (ValueError, RecursionError, MemoryError) as exc:
            parse_errors.append(ParseError(file=relative, line=None, message=f"{type(exc).__name__}: {exc}"[:200]))
            return
        functions.extend(FunctionComplexity(file=relative, name=name, line=line, complexity=complexity)
                         for name, line, complexity in measured)

    @staticmethod
    def _findings(secrets: list[SecretHit], complex_functions: list[FunctionComplexity],
                  parse_errors: list[ParseError], params: CodeAnalysisInput, truncated: bool) -> list[Finding]:
        titles = {rule.id: rule.title for rule in SECRET_RULES}
        findings = [Finding(
            severity=hit.severity,
            title=f"{titles[hit.rule]}" + (f" in {hit.name}" if hit.name else "") + f": {hit.preview}",
            detail=f"Rule {hit.rule}. Revoke and rotate this credential, then move it to a secret store or the "
                   "environment; deleting the line leaves it in version-control history.",
            location=f"{hit.file}:{hit.line}") for hit in secrets]
        findings += [Finding(
            severity=Severity.medium, title=f"Complex function {f.name} (McCabe {f.complexity})",
            detail=f"Above the threshold of {params.complexity_threshold}: hard to test every path; consider "
                   "splitting it.", location=f"{f.file}:{f.line}") for f in complex_functions]
        findings += [Finding(
            severity=Severity.low, title=f"Python file does not parse: {e.message}",
            detail="Its functions were not measured.", location=f"{e.file}:{e.line}" if e.line else e.file)
            for e in parse_errors]
        if truncated:
            findings.append(Finding(severity=Severity.info, title=f"Stopped after max_files={params.max_files} files",
                                    detail="Raise max_files to analyse the rest of the tree."))
        return findings

    @staticmethod
    def _summary(out: CodeAnalysisOutput, params: CodeAnalysisInput) -> str:
        top = ", ".join(f"{s.language} {s.code:,}" for s in out.languages[:5])
        parts = [f"Read {out.files_read} text files under {out.root}: {out.code_lines:,} code, "
                 f"{out.comment_lines:,} comment and {out.blank_lines:,} blank lines in {len(out.languages)} "
                 f"languages" + (f" ({top})" if top else "")]
        if out.functions_analysed:
            worst = out.top_complex[0]
            parts.append(f"{out.functions_analysed} Python functions, {out.complex_functions} above complexity "
                         f"{params.complexity_threshold} (most complex: {worst.name} at {worst.complexity})")
        by_rule = Counter(hit.rule for hit in out.secrets)
        parts.append(f"{len(out.secrets)} possible secrets" +
                     (" (" + ", ".join(f"{n} {rule}" for rule, n in sorted(by_rule.items())) + ")" if by_rule else ""))
        if out.parse_errors:
            parts.append(f"{len(out.parse_errors)} Python files failed to parse")
        parts.append(f"{out.binary_files} binary files and {len(out.skipped)} other entries skipped")
        if out.truncated:
            parts.append(f"stopped at max_files={params.max_files}")
        return "; ".join(parts) + "."


AGENT = CodeAnalysis()
