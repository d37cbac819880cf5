"""The code_analysis agent on a tree made here: known line counts, a known McCabe complexity,
planted secrets found at the right file:line and never leaked into the result or the evidence.

Every planted secret is assembled at run time from fragments, so this file itself holds no
string that a secret scanner (this agent included) would flag.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import mccabe
import pytest
from pydantic import ValidationError

from agents.code_analysis import (
    AGENT,
    CodeAnalysisInput,
    CodeAnalysisOutput,
    count_lines,
    find_secrets,
    function_complexity,
    is_secret_name,
    language_of,
    redact,
)
from amas.registry import AgentInputError, Severity

pytestmark = pytest.mark.unit

APP_PY = '''#!/usr/bin/env python3
"""Module docstring."""
# a comment line

import os


def branchy(x, items):
    # decide
    if x > 0:
        return 1
    elif x < 0:
        return -1
    for item in items:
        if item:
            continue
    while x:
        x -= 1
    try:
        os.getcwd()
    except OSError:
        pass
    return 0  # trailing comment: still a code line


class Box:
    @property
    def size(self):
        return 1 if self else 0

    @size.setter
    def size(self, value):
        if value:
            self.value = value
'''
# APP_PY: 34 lines; blank 6 (lines 4, 6, 7, 24, 25, 30); comment 3 (lines 1, 3, 9); code 25.
# mccabe: 1 + if + elif + for + inner if + while + 2 for try/except (the body and the handler each reach the end).
BRANCHY_COMPLEXITY = 8

SOURCES = {
    "src/app.py": (APP_PY, ("Python", 25, 3, 6)),
    "web/app.js": ('// header comment\n/* block\n   comment */\n\nconst url = "http://example.com"; // trailing\n'
                   'function f() { /* inline */ return 1; }\n/** doc\n * more\n */\nconst s = "/* not a comment */";\n'
                   'let after = 1;\n', ("JavaScript", 4, 6, 1)),
    "web/types.ts": ("// ts\nexport type A = { a: number };\n", ("TypeScript", 1, 1, 0)),
    "cmd/main.go": ("package main\n\n// main starts\nfunc main() {\n\t/* nothing */\n}\n", ("Go", 3, 2, 1)),
    "lib/lib.rs": ("//! crate doc\nfn f<'a>(x: &'a str) -> &'a str { x } // lifetimes\n", ("Rust", 1, 1, 0)),
    "java/A.java": ("/**\n * Doc.\n */\npublic class A {}\n", ("Java", 1, 3, 0)),
    "c/main.c": ("int main(void) {\n  /* a */ return 0; /* b */\n}\n", ("C", 3, 0, 0)),
    "c/util.hpp": ("#pragma once\n// util\n", ("C++", 1, 1, 0)),
    "scripts/run.sh": ('#!/bin/sh\n# comment\necho "# not a comment" # real comment\n\n', ("Shell", 1, 2, 1)),
    "bin/tool": ("#!/usr/bin/env bash\necho hi\n", ("Shell", 1, 1, 0)),
    "conf/app.yaml": ("# settings\nkey: value\n\nlist:\n  - a # trailing\n", ("YAML", 3, 1, 1)),
    "conf/data.json": ('{\n  "a": 1\n}\n', ("JSON", 3, 0, 0)),
    "docs/README.md": ("# Title\n\nSome text, it's fine.\n<!-- hidden -->\n", ("Markdown", 2, 1, 1)),
    "db/schema.sql": ("-- comment\nSELECT 1; -- trailing\n/* block */\nSELECT '--not a comment';\n\n",
                      ("SQL", 2, 2, 1)),
    "site/index.html": ("<!DOCTYPE html>\n<!-- a comment -->\n<p>hi</p>\n<!--\nmulti\n-->\n", ("HTML", 2, 4, 0)),
    "site/style.css": ("/* c */\nbody { color: red; }\n", ("CSS", 1, 1, 0)),
}
EXPECTED_LANGUAGES = {
    "Python": (1, 25, 3, 6), "JavaScript": (1, 4, 6, 1), "TypeScript": (1, 1, 1, 0), "Go": (1, 3, 2, 1),
    "Rust": (1, 1, 1, 0), "Java": (1, 1, 3, 0), "C": (1, 3, 0, 0), "C++": (1, 1, 1, 0), "Shell": (2, 2, 3, 1),
    "YAML": (1, 3, 1, 1), "JSON": (1, 3, 0, 0), "Markdown": (1, 2, 1, 1), "SQL": (1, 2, 2, 1),
    "HTML": (1, 2, 4, 0), "CSS": (1, 1, 1, 0),
}


def planted() -> dict[str, str]:
    """Pattern-valid but fake secrets, assembled so that no literal here matches a rule."""
    return {
        "aws_id": "AKIA" + "QZ7EXAMPLE2TESTK",
        "aws_sk": "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYFAKEKEY123",
        "github": "ghp" + "_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
        "github_pat": "github" + "_pat_" + "11ABCDEFG0123456789_abcdefghijKLMNOP",
        "slack": "xox" + "b-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "stripe": "sk" + "_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "google": "AI" + "za" + "SyD3fakeFAKEfake0123456789abcdefXYZ",
        "pw": "Zq8#vL2!" + "pW9x",
        "url_pw": "S3cr3t" + "Passw0rdXyz",
        "jwt": "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9" + "." + "eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + "."
               + "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "dotenv": "9f8e7d6c5b4a" + "39281706f5e4",
        "key_body": "MIIEowIBAAKCAQEA" + "fakefakefakefakefakefakefake",
    }


def write_tree(root: Path) -> dict[str, str]:
    for relative, (text, _) in SOURCES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    s = planted()
    settings = "\n".join([
        f'AWS_ACCESS_KEY_ID = "{s["aws_id"]}"',
        f'aws_secret_access_key = "{s["aws_sk"]}"',
        f'GITHUB_TOKEN = "{s["github"]}"',
        f'slack = {{"token": "{s["slack"]}"}}',
        f'STRIPE = "{s["stripe"]}"',
        f'maps_key = "{s["google"]}"',
        f'db_password = "{s["pw"]}"',
        f'DATABASE_URL = "postgresql://app:{s["url_pw"]}@db.internal:5432/app"',
        f'headers = {{"Authorization": "Bearer {s["jwt"]}"}}',
        f'FINE_GRAINED = "{s["github_pat"]}"',
        "",
    ])
    (root / "config").mkdir()
    (root / "config" / "settings.py").write_text(settings)
    (root / "keys").mkdir()
    begin, end = "-----BEGIN " + "RSA PRIVATE" + " KEY-----", "-----END " + "RSA PRIVATE" + " KEY-----"
    (root / "keys" / "id_rsa").write_text(f"{begin}\n{s['key_body']}\n{end}\n")
    (root / ".env").write_text(f"# local settings\nAPI_KEY={s['dotenv']}\nDEBUG=true\n")
    # Look-alikes that are not secrets: placeholders, environment lookups, names that only contain a word.
    (root / "config" / "safe.py").write_text("\n".join([
        'password = "changeme"',
        'tokenizer = "bert-base-uncased-v2"',
        'password = os.environ["DB_PASSWORD"]',
        'url = "postgres://user:${DB_PASS}@host/db"',
        'api_key = "DB_API_KEY_NAME"',
        'password_field = "Zq8vL2pW9xTm4Rk"',
        'db_url = f"postgresql://{user}:{password}@{host}/db"',
        'pattern = "-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"',
        "",
    ]))
    # Never read: a binary file, an excluded directory, and a file above max_file_bytes.
    (root / "blob.bin").write_bytes(b"\x00\x01" + s["aws_id"].encode() + b"\x00")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text(f'const k = "{s["stripe"]}";\n')
    (root / "broken.py").write_text("def broken(:\n    pass\n")
    return s


EXPECTED_SECRETS = {
    ("config/settings.py", 1, "aws-access-key-id", Severity.critical),
    ("config/settings.py", 2, "aws-secret-access-key", Severity.critical),
    ("config/settings.py", 3, "github-token", Severity.high),
    ("config/settings.py", 4, "slack-token", Severity.high),
    ("config/settings.py", 5, "stripe-secret-key", Severity.high),
    ("config/settings.py", 6, "google-api-key", Severity.critical),
    ("config/settings.py", 7, "assigned-secret", Severity.high),
    ("config/settings.py", 8, "url-password", Severity.high),
    ("config/settings.py", 9, "jwt", Severity.high),
    ("config/settings.py", 10, "github-fine-grained-token", Severity.high),
    ("keys/id_rsa", 1, "private-key", Severity.critical),
    (".env", 2, "assigned-secret", Severity.high),
}


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "repo"
    root.mkdir()
    return root, write_tree(root)


def analyse(context, root: Path, **params) -> CodeAnalysisOutput:
    return AGENT.run(CodeAnalysisInput(path=str(root), **params), context)


def test_line_counts_per_language(tree, agent_context) -> None:
    root, _ = tree
    result = analyse(agent_context, root)
    got = {s.language: (s.files, s.code, s.comment, s.blank) for s in result.languages}
    # settings.py, safe.py and broken.py are Python too.
    python_extra = [count_lines((root / p).read_text(), language_of(root / p))
                    for p in ("config/settings.py", "config/safe.py", "broken.py")]
    files, code, comment, blank = EXPECTED_LANGUAGES["Python"]
    expected = dict(EXPECTED_LANGUAGES, Python=(
        files + 3, code + sum(c.code for c in python_extra), comment + sum(c.comment for c in python_extra),
        blank + sum(c.blank for c in python_extra)))
    assert got == expected
    assert [c.code for c in python_extra] == [10, 8, 2] and [c.comment for c in python_extra] == [0, 0, 0]
    assert result.code_lines == sum(v[1] for v in expected.values())
    assert result.languages[0].language == "Python"  # most code first
    # .env, keys/id_rsa are text in no known language, still scanned; blob.bin is binary.
    assert result.unrecognised_files == 2 and result.binary_files == 1
    assert result.files_read == sum(v[0] for v in expected.values()) + 2


@pytest.mark.parametrize(("relative", "expected"), [(r, e) for r, (_, e) in SOURCES.items()])
def test_count_lines_each_sample(tmp_path: Path, relative: str, expected: tuple[str, int, int, int]) -> None:
    text = SOURCES[relative][0]
    language = language_of(Path(relative), text.split("\n", 1)[0])
    assert language is not None and language.name == expected[0]
    counts = count_lines(text, language)
    assert (counts.code, counts.comment, counts.blank) == expected[1:]
    assert counts.code + counts.comment + counts.blank == len(text.splitlines())


def test_mccabe_complexity_and_threshold_findings(tree, agent_context) -> None:
    root, _ = tree
    result = analyse(agent_context, root, complexity_threshold=3, top_n=2)
    assert result.top_complex[0].model_dump() == {
        "file": "src/app.py", "name": "branchy", "line": 8, "complexity": BRANCHY_COMPLEXITY}
    assert len(result.top_complex) == 2
    # The property getter and setter share a name; both are measured.
    measured = function_complexity(APP_PY, "app.py")
    assert sorted(measured) == [("Box.size", 28, 1), ("Box.size", 32, 2), ("branchy", 8, BRANCHY_COMPLEXITY)]
    # The same number flake8's C901 check (mccabe's own checker) reports.
    mccabe.McCabeChecker.max_complexity = 0
    try:
        c901 = {line: text for line, _, text, _ in mccabe.McCabeChecker(ast.parse(APP_PY), "app.py").run()}
    finally:
        mccabe.McCabeChecker.max_complexity = -1
    assert c901[8] == f"C901 'branchy' is too complex ({BRANCHY_COMPLEXITY})"
    assert result.functions_analysed == 3 and result.complex_functions == 1
    complex_findings = [f for f in result.findings if f.title.startswith("Complex function")]
    assert [(f.severity, f.location) for f in complex_findings] == [(Severity.medium, "src/app.py:8")]
    default = analyse(agent_context, root)
    assert default.complex_functions == 0  # 8 is not above the default threshold of 10


def test_unparsable_python_is_reported_not_raised(tree, agent_context) -> None:
    root, _ = tree
    result = analyse(agent_context, root)
    assert [(e.file, e.line) for e in result.parse_errors] == [("broken.py", 1)]
    assert result.parse_errors[0].message
    assert any(f.severity is Severity.low and f.location == "broken.py:1" for f in result.findings)
    assert "1 Python files failed to parse" in result.summary


def test_secrets_found_at_file_and_line(tree, agent_context) -> None:
    root, s = tree
    result = analyse(agent_context, root)
    assert {(h.file, h.line, h.rule, h.severity) for h in result.secrets} == EXPECTED_SECRETS
    previews = {(h.file, h.line): h.preview for h in result.secrets}
    assert previews[("config/settings.py", 1)] == s["aws_id"][:4] + "*" * 12 + s["aws_id"][-4:]
    assert previews[("config/settings.py", 7)] == "*" * len(s["pw"])  # short: masked whole
    url_pw = s["url_pw"]  # 17 characters: a fifth (3) kept at each end
    assert previews[("config/settings.py", 8)] == (
        f"postgresql://app:{url_pw[:3]}{'*' * 11}{url_pw[-3:]}@db.internal:5432")
    assert previews[("keys/id_rsa", 1)] == "-----BEGIN " + "RSA PRIVATE" + " KEY-----"
    names = {(h.file, h.line): h.name for h in result.secrets}
    assert names[("config/settings.py", 7)] == "db_password" and names[(".env", 2)] == "API_KEY"
    located = {f.location for f in result.findings if f.severity in (Severity.critical, Severity.high)}
    assert located == {f"{file}:{line}" for file, line, _, _ in EXPECTED_SECRETS}
    assert "12 possible secrets" in result.summary


def test_secrets_never_leak_into_result_or_evidence(tree, agent_context) -> None:
    root, s = tree
    result = analyse(agent_context, root)
    dumped = result.model_dump_json()
    evidence = [agent_context.storage.get(e.key).decode() for e in result.evidence]
    assert len(evidence) == 1 and json.loads(evidence[0])["secrets"]
    for label, secret in s.items():
        for haystack in (dumped, *evidence):
            assert secret not in haystack, label
            # Nor any 9-character piece of it: a preview keeps at most 4 + 4 characters.
            assert not any(secret[i:i + 9] in haystack for i in range(len(secret) - 8)), label


def test_exclusions_binary_and_size_limits(tree, agent_context) -> None:
    root, s = tree
    result = analyse(agent_context, root)
    assert not any(h.file.startswith(("node_modules", "blob")) for h in result.secrets)
    custom = analyse(agent_context, root, exclude=["config/*", "keys", ".env", "node_modules"])
    assert {h.file for h in custom.secrets} == set()
    assert "Python" in {s.language for s in custom.languages}
    small = analyse(agent_context, root, max_file_bytes=100)
    assert "config/settings.py" in {k.path for k in small.skipped}
    assert all("max_file_bytes" in k.reason for k in small.skipped)
    capped = analyse(agent_context, root, max_files=3)
    assert capped.truncated and capped.files_read == 3 and "max_files=3" in capped.summary


def test_single_file_and_relative_path(tree, agent_context, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = tree
    monkeypatch.chdir(root)
    result = analyse(agent_context, Path("src/app.py"))
    assert result.root == str(root.resolve() / "src" / "app.py")
    assert [(s.language, s.code) for s in result.languages] == [("Python", 25)]
    assert result.reads == [result.root]


def test_secret_rules_on_single_lines() -> None:
    s = planted()
    hits = list(find_secrets(f'aws_secret_access_key = "{s["aws_sk"]}"'))
    # The AWS rule wins over the generic assignment on the same characters.
    assert [h.rule.id for h in hits] == ["aws-secret-access-key"]
    assert list(find_secrets(f"API_KEY={s['dotenv']}")) == []  # unquoted counts only in config files
    assert [h.rule.id for h in find_secrets(f"API_KEY={s['dotenv']}", config=True)] == ["assigned-secret"]
    assert [h.rule.id for h in find_secrets(f"redis://:{s['url_pw']}@cache:6379/0")] == ["url-password"]
    assert list(find_secrets("see https://example.com/a:b@c for details")) == []  # ':' and '@' in a path
    assert redact("AKIA" + "ABCDEFGHIJKL" + "WXYZ") == "AKIA************WXYZ"
    assert redact("short") == "*****"


@pytest.mark.parametrize(("name", "secret"), [
    ("db_password", True), ("apiKey", True), ("AUTH_TOKEN", True), ("client_secret", True), ("SECRET_KEY", True),
    ("tokenizer", False), ("password_field", False), ("secret_name", False), ("passwordHash", False),
    ("keyboard", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_bad_input_names_the_field(tmp_path: Path, agent_context) -> None:
    with pytest.raises(AgentInputError, match=r"^path: .*missing.* does not exist"):
        analyse(agent_context, tmp_path / "missing")
    with pytest.raises(AgentInputError, match=r"^path: .*neither a directory nor a regular file"):
        analyse(agent_context, Path("/dev/null"))
    with pytest.raises(ValidationError, match="path"):
        CodeAnalysisInput()
    with pytest.raises(ValidationError, match="exclude"):
        CodeAnalysisInput(path=".", exclude=[" "])
    with pytest.raises(ValidationError, match="max_file_bytes"):
        CodeAnalysisInput(path=".", max_file_bytes=0)
