"""Detection of credentials pasted into free text: API keys, tokens, private keys, passwords.

Why a credential is personal data here: a key pasted into a support ticket grants access to
someone's account, and a model trained on the ticket can repeat it verbatim.

The provider token shapes come from the ``detect-secrets`` plugins (AWS, GitHub, Slack,
private keys, JWTs and the keyword list of its ``KeywordDetector``), so they follow
that project's updates. Its own scan loop is not used: it runs every plugin over every line from
Python (with per-line filters and a code-snippet object per hit), which is orders of magnitude too
slow for redacting every curated row. Instead the plugins' regexes are taken once, when this
detector first runs (``detect_secrets`` is imported then, never by the spec loader), and run the
project's way: once each over a batch of rows joined with NUL, each anchored on a literal prefix
("AKIA", "ghp_", "eyJ", "://", ...) that the regex engine skips to in C. Keyword cues ("password:",
"api key =") are found the same way and only then is the value after them checked.

Spans: the secret only. For ``scheme://user:password@host`` that is the password (the user name and
host stay, so the text keeps its meaning); for ``password: value`` it is the value; a private key
block is covered from its BEGIN line through its END line (to the end of the row if the END line was
not pasted).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmops.privacy.pii_types import Span

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

_TYPE = "credential"
_SEP = "\x00"

# A token must not be glued to more token characters on either side ("xAKIA...", "...KEYx").
_TOKEN_CHAR = re.compile(r"[\w\-]")
# Values that stand for a secret without being one: templates, masks, our own tokens.
_PLACEHOLDER = re.compile(
    r"(?i)(?:[<\[{(*]|[$%][{(]|x{3,}|\.{3})"
    r"|(?:password|passwd|secret|changeme|redacted|example|none|null|undefined|hidden|your[a-z_]*"
    r"|[a-z_]*here)\Z"
)
# The separators between a keyword and its value, each searched as a literal (which the regex engine
# finds at memchr speed; a character class such as "[:=]" is tested position by position, ~20x
# slower). Prose forms are English only: "Passwort: x" is found by its colon.
_SEPARATORS = (":", "=", " is ", " was ")
_AFTER_SEPARATOR = re.compile(r"[:=>]*[ \t]*")
_VALUE = re.compile(r"(['\"`]?)([^\s'\"`\x00]{4,200})\1")
# Extra keywords beyond detect-secrets' list (written as they appear in prose, not in code).
_MORE_KEYWORDS = (
    "passcode",
    "pass_?phrase",
    "passwort",
    "kennwort",
    "mot_?de_?passe",
    "access_?token",
    "auth_?token",
    "bearer_?token",
    "credentials?",
)
# Token shapes of providers detect-secrets has no plugin for: (literal prefix, pattern at the prefix).
# Each prefix costs one str.find over the text: only long-lived keys that tickets do hold are listed.
_MORE_TOKENS = (
    ("glpat-", r"glpat-[0-9A-Za-z_\-]{20,64}"),  # GitLab personal access token
    # OpenAI project keys, Anthropic API keys, OpenAI legacy keys
    (
        "sk-",
        r"sk-(?:proj-[0-9A-Za-z_\-]{40,200}|ant-[a-z]{3,5}\d{2}-[0-9A-Za-z_\-]{80,120}"
        r"|[0-9A-Za-z]{20}T3BlbkFJ[0-9A-Za-z]{20})",
    ),
    ("npm_", r"npm_[0-9A-Za-z]{36}"),  # npm access token
    ("hf_", r"hf_[A-Za-z0-9]{34,40}"),  # Hugging Face token
)
# Every keyword contains one of these: a cheap test before the keyword regex runs on a window.
_STEMS = ("pass", "pwd", "secret", "key", "token", "kennwort", "contras", "credential")
_WINDOW = 48  # characters before a separator in which its keyword must end


@dataclass(frozen=True)
class _Anchored:
    """A token pattern and a literal every match holds ``offset`` characters from its start.

    With ``offset`` None the pattern is searched as it is (it starts with a literal, which the regex
    engine skips to fast). Otherwise the literal is found with ``str.find`` and the pattern matched
    only there: detect-secrets compiles some of its patterns case-insensitively or starting with a
    character class, and those the engine tests at every position.
    """

    literal: str
    rx: re.Pattern[str]
    offset: int | None = None
    group: int = 0
    random: bool = False  # the match must also look random (see random_token), not like a word

    def matches(self, text: str) -> Iterator[re.Match[str]]:
        if self.offset is None:
            yield from self.rx.finditer(text)
            return
        pos = 0
        while (i := text.find(self.literal, pos)) >= 0:
            pos = i + 1
            if i >= self.offset and (m := self.rx.match(text, i - self.offset)):
                yield m


@dataclass(frozen=True)
class _Patterns:
    tokens: tuple[_Anchored, ...]
    private_key: re.Pattern[str]
    jwt: re.Pattern[str]
    basic_auth: re.Pattern[str]  # group 1 is the password
    keyword_before: re.Pattern[str]  # a keyword (lowercase) that ends where the window ends


def _spellings(word: str) -> list[str]:
    """detect-secrets writes an optional separator as "_?": in prose it is also " ", "-" or none."""
    return [word.replace("_?", joint) for joint in ("", "_", " ", "-")] if "_?" in word else [word]


@functools.cache
def _patterns() -> _Patterns:
    from detect_secrets.plugins import (
        aws,
        github_token,
        jwt,
        keyword,
        private_key,
        slack,
    )

    access_key, secret_key = aws.AWSKeyDetector.denylist
    slack_token, slack_hook = slack.SlackDetector.denylist
    tokens = (
        _Anchored("A", access_key),
        *(_Anchored("gh", rx) for rx in github_token.GitHubTokenDetector.denylist),
        _Anchored("xox", slack_token, offset=0),
        _Anchored("hooks.slack.com", slack_hook, offset=len("https://")),
        _Anchored("aws", secret_key, offset=0, group=1),
        _Anchored("AWS", secret_key, offset=0, group=1),
        # Fine-grained GitHub tokens, Google API keys, Stripe publishable keys: not in detect-secrets.
        _Anchored("github_pat_", re.compile(r"github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}")),
        _Anchored("AIza", re.compile(r"AIza[0-9A-Za-z_\-]{35}")),
        _Anchored("pk_live_", re.compile(r"pk_live_[0-9a-zA-Z]{24}")),
        # Stripe secret and restricted keys: detect-secrets' pattern stops at 24 characters, and keys
        # are longer nowadays.
        _Anchored("k_live_", re.compile(r"[rs]k_live_[0-9a-zA-Z]{24,247}"), offset=1),
        # Provider prefixes that detect-secrets has no plugin for, each found with str.find.
        *(_Anchored(prefix, re.compile(pattern), offset=0, random=True) for prefix, pattern in _MORE_TOKENS),
    )
    markers = [rx.pattern.removeprefix("BEGIN ") for rx in private_key.PrivateKeyDetector.denylist]
    begin = "|".join(re.escape(m) for m in markers if not m.startswith("PuTTY"))
    words = [spelling for w in (*keyword.DENYLIST, *_MORE_KEYWORDS) for spelling in _spellings(w)]
    return _Patterns(
        tokens=tokens,
        private_key=re.compile(rf"-----BEGIN (?:{begin})-----"),
        jwt=jwt.JwtTokenDetector.denylist[0],
        # detect-secrets' basic-auth pattern refuses passwords holding RFC 3986 sub-delimiters
        # ("!", "$", "&", "+", ...), which pasted URLs do contain; this one stops only at the
        # characters that end the userinfo.
        # "?" and "#" are kept too (pasted passwords hold them), unless they follow a port number.
        basic_auth=re.compile(r"://[^\s:/?#\[\]@]+:(?!\d+[?#])([^\s/\[\]@]+)@"),
        keyword_before=re.compile(
            rf"(?:{'|'.join(map(re.escape, words))})[\w\-]{{0,30}}(?:[ ](?:access[ ])?key)?"
            r"[\]'\"]{0,2}[ \t]*\Z"
        ),
    )


def _glued(text: str, start: int, end: int) -> bool:
    before = start > 0 and _TOKEN_CHAR.match(text, start - 1) is not None
    return before or _TOKEN_CHAR.match(text, end) is not None


def _row_end(text: str, pos: int) -> int:
    end = text.find(_SEP, pos)
    return len(text) if end < 0 else end


def _entropy(value: str) -> float:
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def looks_secret(value: str) -> bool:
    """Whether a keyword-cued value is shaped like a secret rather than like prose.

    Prose after "password:" is one or more plain words ("please reset it"), a placeholder
    ("<your password>", "****") or a mask. A secret is at least 4 digits (a PIN or passcode), or at
    least 6 characters mixing letters with digits or symbols, or letters in mixed case beyond an
    initial capital; and not a run of one or two repeated characters.
    """
    if _PLACEHOLDER.match(value) or len(set(value)) < 3:
        return False
    if value.isdigit():
        return len(value) >= 4
    if len(value) < 6:
        return False
    letters_only = value.isalpha()
    if letters_only:
        return any(ch.isupper() for ch in value[1:]) and any(ch.islower() for ch in value)
    return _entropy(value) >= 2.0


_HEX = re.compile(r"[0-9a-f\-]+|[0-9A-F\-]+")


def random_token(value: str, min_length: int = 20) -> bool:
    """Whether ``value`` looks machine-generated like an API key: long, upper and lower case mixed
    with digits (or of very high entropy without them), many distinct characters. A word, a
    snake_case name, a hex hash or a UUID does not."""
    if len(value) < min_length or len(set(value)) < 12 or _HEX.fullmatch(value):
        return False
    if not (any(c.isupper() for c in value) and any(c.islower() for c in value)):
        return False
    entropy = _entropy(value)
    return entropy >= 3.5 if any(c.isdigit() for c in value) else entropy >= 4.0


def _token_spans(text: str, p: _Patterns) -> list[Span]:
    out: list[Span] = []
    for anchored in p.tokens:
        for m in anchored.matches(text):
            start, end = m.span(anchored.group)
            if _SEP in m.group() or _glued(text, start, end):
                continue
            if anchored.random and not random_token(text[start:end]):
                continue
            out.append(Span(start, end, _TYPE))
    return out


def _private_key_spans(text: str, p: _Patterns) -> list[Span]:
    out: list[Span] = []
    pos = 0
    while m := p.private_key.search(text, pos):
        row_end = _row_end(text, m.end())
        end_line = text.find("-----END ", m.end(), row_end)
        if end_line < 0:
            end = row_end
        else:
            close = text.find("-----", end_line + 9, row_end)
            end = row_end if close < 0 else close + 5
        out.append(Span(m.start(), end, _TYPE))
        pos = end
    return out


def _b64json(part: str) -> object:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


_B64URL = re.compile(r"[A-Za-z0-9_\-]+")


def _jwt_spans(text: str, p: _Patterns) -> list[Span]:
    """Header.payload.signature, each base64url; the header must decode to JSON naming an "alg"."""
    out: list[Span] = []
    for m in p.jwt.finditer(text):
        head, _, rest = m.group().partition(".")
        payload = rest.rstrip(".").partition(".")[0]
        sig = _B64URL.match(text, m.end()) if m.group().endswith(".") else None
        end = sig.end() if sig else m.end()
        if sig is None or _glued(text, m.start(), end):
            continue
        try:
            header = _b64json(head.rstrip("="))
            _b64json(payload.rstrip("="))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
        if isinstance(header, dict) and "alg" in header:
            out.append(Span(m.start(), end, _TYPE))
    return out


def _basic_auth_spans(text: str, p: _Patterns) -> list[Span]:
    out: list[Span] = []
    for m in p.basic_auth.finditer(text):
        password = m.group(1)
        if _SEP not in m.group() and not _PLACEHOLDER.match(password):
            out.append(Span(m.start(1), m.end(1), _TYPE))
    return out


def _keyword_spans(text: str, p: _Patterns) -> list[Span]:
    """The value after a cue such as "password:", "pwd=", "api key is", if it looks like a secret.

    The separator is found first (a literal); only when the few characters before it hold a keyword
    stem is the keyword regex run, on that window alone.
    """
    out: list[Span] = []
    for sep in _SEPARATORS:
        pos = 0
        while (i := text.find(sep, pos)) >= 0:
            pos = i + 1
            window = text[max(0, i - _WINDOW) : i]
            lowered = window.lower()
            if not any(stem in lowered for stem in _STEMS):
                continue
            # "password: x" is a cued value; "leaked this token in a log line: x" only vouches for x
            # when x is a long random token.
            cued = p.keyword_before.search(lowered) is not None
            m = _VALUE.match(text, _AFTER_SEPARATOR.match(text, i + len(sep)).end())
            if m is None:
                continue
            value = m.group(2)
            if not m.group(1):  # unquoted: a sentence's closing punctuation is not part of it
                value = value.rstrip(".,;:)")  # not "?" or "!": passwords end with them too
            if looks_secret(value) if cued else _bare_token(value):
                out.append(Span(m.start(2), m.start(2) + len(value), _TYPE))
                pos = m.end()
    return out


_BARE_TOKEN = re.compile(r"[0-9A-Za-z_\-+/]{32,200}={0,2}")  # base64 and base64url alphabets


def _bare_token(value: str) -> bool:
    """A long random run of token characters (an AWS secret key holds "+" and "/"): no path, URL,
    UUID or hash (those are single-case or have separators in fixed places)."""
    return _BARE_TOKEN.fullmatch(value) is not None and random_token(value, 32)


# "new password Tiger_Mango7": the English keyword right before its value, with no separator; the value
# must then hold a digit or a symbol besides looking secret, so "password reset link" stays prose.
# One str.find for both capitalisations: "password ", "Password ".
_BARE_KEYWORDS = ("assword ",)


def _bare_keyword_spans(text: str, p: _Patterns) -> list[Span]:  # noqa: ARG001 - a finder's signature
    out: list[Span] = []
    for keyword in _BARE_KEYWORDS:
        pos = 0
        while (i := text.find(keyword, pos)) >= 0:
            pos = i + len(keyword)
            if i == 0 or text[i - 1] not in "pP" or (i > 1 and text[i - 2].isalnum()):
                continue
            m = _VALUE.match(text, pos)
            if m is None or m.group(1):
                continue
            value = m.group(2).rstrip(".,;:)")
            if looks_secret(value) and not value.isalpha() and not value.isdigit():
                out.append(Span(m.start(2), m.start(2) + len(value), _TYPE))
    return out


_FINDERS: tuple[Callable[[str, _Patterns], list[Span]], ...] = (
    _token_spans,
    _private_key_spans,
    _jwt_spans,
    _basic_auth_spans,
    _keyword_spans,
    _bare_keyword_spans,
)


def detect_credential(text: str) -> list[Span]:
    """Secrets: provider tokens and keys, JWTs, private key blocks, URL passwords, cued passwords.

    Spans may overlap each other (a JWT after "token:"); the scanner's overlap resolution keeps the
    longest.
    """
    p = _patterns()
    return [span for find in _FINDERS for span in find(text, p)]
