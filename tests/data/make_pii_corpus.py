"""Generate the labelled PII corpora: support-ticket sentences with exact PII span labels.

Why a generated corpus: precision and recall of the PII detectors need ground truth, and real tickets
cannot be committed. Every line is ``{"text": ..., "spans": [{"start", "end", "type"}]}``; about a
fifth of the lines are hard negatives (dates without a birth cue, order numbers, versions, UUIDs, git
and SHA-256 hashes, ISBNs, parcel numbers, base64 that is no JWT, Luhn-invalid card numbers, IBANs and
national IDs with a wrong checksum, invalid SSN areas, brands that start with a first name, "password:"
followed by no password). Each PII line is drawn for a target type in turn, so every type gets its
share of spans.

Two parts, written to two files:

* ``pii_corpus.jsonl``, the **development** part: tune detectors against it, and the unit tests
  (tests/unit/test_pii_corpus.py) hold thresholds on it.
* ``pii_corpus_heldout.jsonl``, the **held-out** part, for measuring (bench/pii_quality.py). It
  comes from another seed, and part of its vocabulary never appears in the development part: its own
  first names and surnames (most of its full names hold at least one), its own e-mail domains, its own sentence templates
  (other cue phrasings, other positions of the value in the sentence) and its own hard negatives; it
  also holds a few value formats the development part lacks (``+44 (0)7700 ...`` phones, dates of
  birth written "14th March 1987", "name (at) domain (dot) com"). A detector tuned until it scores
  well on the development part can still be seen to over-fit on the held-out part, **so detector
  tuning must never look at the held-out file**: don't read its lines, don't add its names or cue
  phrases to a detector, and don't change a detector because of a held-out miss (add a similar,
  different case to the development templates instead).

To keep the measurement honest, the names, formats and cues here are written independently of the
detectors: the first-name lists below were not copied from llmops/privacy/data/first_names.txt and
include names from cultures the gazetteer does not cover, ambiguous names (Mark, Grace) used in
running text, and formats a detector may reject on purpose (bare 10-digit US numbers). National IDs
carry their real checksums (ISO 7064 for the Steuer-ID, mod 97 for the NIR, mod 23 for DNI/NIE, the
11-test for the BSN, the odd/even table for the codice fiscale); they are computed here, and
``main()`` checks them with python-stdnum when it is installed.

Deterministic: the same seed always yields the same files. Run from the repository root:

    python tests/data/make_pii_corpus.py
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import itertools
import json
import logging
import random
import re
import unicodedata
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("make_pii_corpus")

SEED = 20260105
HELDOUT_SEED = 73390211
N_LINES = 1300
OUT = Path(__file__).with_name("pii_corpus.jsonl")
HELDOUT_OUT = Path(__file__).with_name("pii_corpus_heldout.jsonl")

# Common names (a real gazetteer should know most of them) ...
COMMON_FIRST = """
Anna Michael Sarah David Laura Thomas Jennifer Daniel Emily James Maria Lukas Sophie Jonas Lena
Pierre Camille Julien Chloé Carlos Lucía Javier Marta Giulia Marco Francesca Luca Pieter Sanne Daan
Agnieszka Piotr Katarzyna Priya Rahul Ananya Vikram Wei Fatima Omar Youssef Layla Hannah Robert
Elena Ahmed Olivia Noah Isabel Tomasz Stefan Claudia Matteo Chiara Hugo Inès Mohammed Aisha Arjun
Deepika Mei Ling Jürgen Sabine Małgorzata Kevin Rebecca Steven Patricia Ravi Sunita Bram Femke
Mark Grace Jack Rose Will
""".split()
# ... and names from cultures and spellings the detector's list does not cover.
RARE_FIRST = """
Thaddeus Oluwaseun Chidi Ngozi Siobhan Eilidh Aoife Tadhg Kwame Akosua Thandiwe Sipho Mihai Ioana
Dragan Milica Eszter Zsófia Bence Tuomas Aino Ingvild Solveig Bjørn Hiroshi Yuki Haruto Sakura
Minjun Jiwoo Linh Somchai Emeka Chiamaka Itzel Xochitl Rangi Mahnoor Zoltán Radu Anahí Oisín Niamh
Rhys Cerys Dagny Kalani Tariku
""".split()
SURNAMES = (
    """
Schmidt Müller García Rossi Smith Johnson Kowalski Nowak Janssen Dubois Lefèvre Martínez López
Patel Sharma Gupta Singh Wang Zhang Chen Liu Al-Farsi Haddad O'Brien McDonald Okafor Mensah
Nakamura Kim Park Nguyen Kovács Virtanen Hansen Silva Ferreira Bianchi Fischer Weber Wagner Becker
Hoffmann Walker Brown Taylor Wilson Evans Okonkwo-Bello Ionescu Popescu Yilmaz Tanaka
""".split()
    + ["de Vries", "van den Berg", "da Silva", "El Amrani"]
)
# Held-out only: none of these appears in the development part.
HELDOUT_FIRST = """
Bartholomew Ottilie Wilhelmina Casimir Leopoldine Ignatius Perpetua Eberhard Radomir Svetlana Ksenia
Yaroslav Gudrun Torsten Signe Halvard Ragnhild Ezinne Folake Adaeze Babajide Olumide Nnamdi Tendai
Farai Nokuthula Lwazi Kofi Abena Efua Ayaan Ishaan Kavya Saanvi Nikhil Meera Tenzin Pema Dorji Quynh
Thao Ryota Kaito Hina Seo-yeon Do-yoon Aroha Wiremu Mateo Valentina Santiago Camila Joaquín Florencia
Ximena Leilani Keanu Ayelet Yosef Tamar Percival Clementine Evander Marisol
""".split()
HELDOUT_SURNAMES = (
    """
Vasquez-Morales Kowalczyk Lindqvist Haraldsen Oyelaran Adeyemi Chukwu Mwangi Kariuki Banda Phiri
Dlamini Nakashima Fujimoto Watanabe Yoshida Choi Jung Kang Tran Pham Hoang Rahman Chowdhury Iyer Menon
Reddy Krishnan Gallagher Fitzgerald MacLeod Sørensen Jørgensen Nieminen Korhonen Dvořák Novotný
Horváth Szabó Petrov Ivanova Kuznetsov Moreau Girard Lambert Esposito Romano Colombo Ricci Peeters
Claes Whitcombe Featherstone
""".split()
    + ["Van der Meer", "dos Santos", "Ní Bhriain", "ter Horst"]
)

DOMAINS = (
    "example.com", "mail.example.org", "posteo.de", "gmx.net", "outlook.fr", "company.co.uk",
    "uni-hamburg.de", "example.io", "shop-support.eu", "icloud.com",
)  # fmt: skip
HELDOUT_DOMAINS = (
    "example.net", "mailbox.org", "proton.me", "web.de", "libero.it", "orange.fr", "ziggo.nl",
    "btinternet.com", "student.kuleuven.be", "kundenservice.example",
)  # fmt: skip
PRODUCTS = ("trail backpack", "rain jacket", "hiking boots", "router", "smart plug", "e-bike battery")
CITIES = ("Berlin", "Lyon", "Madrid", "Rotterdam", "Kraków", "Milan", "Leeds", "Porto", "Florence", "Sydney")
TITLES = ("Mr", "Mrs", "Ms", "Dr", "Mr.", "Ms.")
# Brands and places that start like a person's name: none of them is PII.
BRANDS = (
    "Mercedes Benz", "Jack Daniels whiskey", "Georgia Pacific", "Hugo Boss", "Dr. Martens", "Wells Fargo",
    "Morgan Stanley", "Ben & Jerry's", "Marks & Spencer", "Tommy Hilfiger", "Ford Focus", "Victoria Station",
)  # fmt: skip


class Part(NamedTuple):
    """One part of the corpus: its seed, file, vocabulary and templates."""

    name: str
    seed: int
    out: Path
    first_common: tuple[str, ...]
    first_rare: tuple[str, ...]
    surnames: tuple[str, ...]
    domains: tuple[str, ...]
    pii_templates: tuple[str, ...]
    negative_templates: tuple[str, ...]
    n_lines: int = N_LINES


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _fold(text: str) -> str:
    text = text.replace("ł", "l").replace("ø", "o").replace("'", "")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


_turns: dict[str, itertools.count[int]] = {}


def _turn(kind: str, n: int) -> int:
    """Formats of a kind are used in turn, so each (including ones a detector rejects) gets its share."""
    return next(_turns.setdefault(kind, itertools.count())) % n


# ---------------------------------------------------------------------------------- PII values


def first_name(rng: random.Random, part: Part) -> str:
    return rng.choice(part.first_rare) if rng.random() < 0.3 else rng.choice(part.first_common)


def full_name(rng: random.Random, part: Part) -> str:
    return f"{first_name(rng, part)} {rng.choice(part.surnames)}"


def lower_name(rng: random.Random, part: Part) -> str:
    """A name typed in lower case ("cc ingrid hansen"): only context can tell it is a name."""
    return full_name(rng, part).lower()


def _local_part(rng: random.Random, part: Part) -> str:
    first = _fold(first_name(rng, part)).lower().replace(" ", "")
    last = _fold(rng.choice(part.surnames)).lower().replace(" ", "")
    return rng.choice(
        [f"{first}.{last}", f"{first[0]}.{last}", f"{first}{last}{rng.randrange(1, 99)}", f"{first}_{last}",
         f"{first}+orders", f"{last}.{first}", f"{first}{rng.randrange(1970, 2005)}"]
    )  # fmt: skip


def email(rng: random.Random, part: Part) -> str:
    address = f"{_local_part(rng, part)}@{rng.choice(part.domains)}"
    if rng.random() < 0.1:  # people do write Anna.Schmidt@Example.com
        address = address.title()
    return address


def obfuscated_email(rng: random.Random, part: Part) -> str:
    """An address written to dodge scrapers: "anna.k3 at example dot com"."""
    local, domain = _local_part(rng, part), rng.choice(part.domains)
    styles = [(" at ", " dot "), (" [at] ", " [dot] "), ("(at)", "(dot)"), (" AT ", " DOT "), (" [at] ", ".")]
    if part.name == "heldout":
        styles += [(" (at) ", " (dot) "), (" {at} ", " {dot} ")]
    at, dot = styles[_turn("obf_email", len(styles))]
    return f"{local}{at}{domain.replace('.', dot)}"


def _us(rng: random.Random) -> tuple[str, str, str]:
    return (
        f"{rng.randrange(2, 10)}{_digits(rng, 2)}",
        f"{rng.randrange(2, 10)}{_digits(rng, 2)}",
        _digits(rng, 4),
    )


def _phone_formats(rng: random.Random, part: Part) -> list[Callable[[], str]]:
    a, b, c = _us(rng)
    formats: list[Callable[[], str]] = [
        lambda: f"+49 30 {_digits(rng, 7)}",
        lambda: f"+49 (0)30 {_digits(rng, 8)}",
        lambda: f"+49 151 {_digits(rng, 8)}",
        lambda: f"030 {_digits(rng, 7)}",
        lambda: f"0171 {_digits(rng, 7)}",
        lambda: f"+4917{_digits(rng, 9)}",
        lambda: f"+44 20 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"020 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"07700 {_digits(rng, 6)}",
        lambda: f"+44 7700 {_digits(rng, 6)}",
        lambda: f"07{rng.randrange(4, 10)}{_digits(rng, 2)} 900{_digits(rng, 3)}",  # UK mobile
        lambda: f"+447{rng.randrange(4, 10)}{_digits(rng, 8)}",  # E.164, no spaces
        lambda: f"+1 ({a}) {b}-{c}",
        lambda: f"({a}) {b}-{c}",
        lambda: f"{a}-{b}-{c}",
        lambda: f"{a}.{b}.{c}",
        lambda: f"1-800-{b}-{c}",
        lambda: f"+1-{a}-{b}-{c}",
        lambda: f"+1{a}{b}{c}",  # E.164
        lambda: f"{a}{b}{c}",  # bare 10 digits: a detector may reject these on purpose (precision)
        lambda: "+33 6 " + " ".join(_digits(rng, 2) for _ in range(4)),
        lambda: "06 " + " ".join(_digits(rng, 2) for _ in range(4)),
        lambda: "06." + ".".join(_digits(rng, 2) for _ in range(4)),
        lambda: f"+336{_digits(rng, 8)}",
        lambda: f"+34 6{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+39 06 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"+31 20 {_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"+31 6 {_digits(rng, 8)}",
        lambda: f"+48 5{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+91 9{_digits(rng, 4)} {_digits(rng, 5)}",
        lambda: f"9{_digits(rng, 4)} {_digits(rng, 5)}",
        lambda: f"+86 138 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"+971 50 {_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"0{rng.randrange(2, 10)}{_digits(rng, 2)}/{_digits(rng, 6)}",
    ]
    if part.name == "heldout":
        formats += [
            lambda: f"+44 (0)7{rng.randrange(4, 10)}{_digits(rng, 2)} {_digits(rng, 6)}",
            lambda: f"0044 20 {_digits(rng, 4)} {_digits(rng, 4)}",
            lambda: f"+41 79 {_digits(rng, 3)} {_digits(rng, 2)} {_digits(rng, 2)}",
        ]
    return formats


def phone(rng: random.Random, part: Part) -> str:
    formats = _phone_formats(rng, part)
    return formats[_turn("phone", len(formats))]()


def _luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _card_digits(rng: random.Random) -> str:
    kind = rng.choice(["visa", "visa", "mc", "mc2", "amex", "discover"])
    if kind == "visa":
        body = "4" + _digits(rng, 14)
    elif kind == "mc":
        body = f"5{rng.randrange(1, 6)}" + _digits(rng, 13)
    elif kind == "mc2":
        body = f"22{rng.randrange(21, 100)}" + _digits(rng, 11)
    elif kind == "amex":
        body = rng.choice(["34", "37"]) + _digits(rng, 12)
    else:
        body = "6011" + _digits(rng, 11)
    return body + _luhn_check_digit(body)


def _format_card(digits: str, rng: random.Random) -> str:
    if len(digits) == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    return rng.choice([" ", " ", "-", ""]).join(groups)


def card(rng: random.Random) -> str:
    return _format_card(_card_digits(rng), rng)


def bad_card(rng: random.Random) -> str:
    digits = _card_digits(rng)
    wrong = str((int(digits[-1]) + rng.randrange(1, 10)) % 10)
    return _format_card(digits[:-1] + wrong, rng)


_IBAN_BBAN = {  # country -> BBAN layout: "n" digit, "a" upper-case letter, "c" alphanumeric
    "DE": "n" * 18,
    "GB": "aaaa" + "n" * 14,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "ES": "n" * 20,
    "IT": "a" + "n" * 10 + "c" * 12,
    "NL": "aaaa" + "n" * 10,
    "PL": "n" * 24,
    "BE": "n" * 12,
    "AT": "n" * 16,
    "CH": "n" * 5 + "c" * 12,
}
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALNUM = "0123456789" + _UPPER


def _iban_check(country: str, bban: str) -> int:
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return 98 - int(numeric) % 97


def _iban_parts(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(_IBAN_BBAN))
    alphabet = {"n": "0123456789", "a": _UPPER, "c": _ALNUM}
    bban = "".join(rng.choice(alphabet[k]) for k in _IBAN_BBAN[country])
    return country, bban


def _format_iban(compact: str, rng: random.Random) -> str:
    if rng.random() < 0.7:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def iban(rng: random.Random) -> str:
    country, bban = _iban_parts(rng)
    return _format_iban(f"{country}{_iban_check(country, bban):02d}{bban}", rng)


def bad_iban(rng: random.Random) -> str:
    country, bban = _iban_parts(rng)
    check = _iban_check(country, bban)
    wrong = (check - 2 + rng.randrange(1, 96)) % 97 + 2  # any other value in 2..98
    return _format_iban(f"{country}{wrong:02d}{bban}", rng)


def _ssn_parts(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}", f"{rng.randrange(1, 100):02d}", f"{rng.randrange(1, 10000):04d}"


def ssn(rng: random.Random) -> str:
    return "-".join(_ssn_parts(rng))


def ssn_loose(rng: random.Random) -> str:
    """An SSN written with spaces or no separators: only a cue ("social security number") marks it."""
    return rng.choice([" ", ""]).join(_ssn_parts(rng))


def bad_ssn(rng: random.Random) -> str:
    area, group, serial = ssn(rng).split("-")
    broken = rng.choice(["area0", "area666", "area9", "group", "serial"])
    if broken == "area0":
        area = "000"
    elif broken == "area666":
        area = "666"
    elif broken == "area9":
        area = f"9{_digits(rng, 2)}"
    elif broken == "group":
        group = "00"
    else:
        serial = "0000"
    return f"{area}-{group}-{serial}"


def ipv4(rng: random.Random) -> str:
    first = rng.choice([10, 172, 192, rng.randrange(1, 224)])
    return ".".join(str(o) for o in [first, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])


def ipv6(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        value = (0x20010DB8 << 96) | rng.getrandbits(64)
    elif style == 1:
        value = (0xFE80 << 112) | rng.getrandbits(64)
    else:
        value = rng.getrandbits(128) | (0x2 << 124)
    return ipaddress.IPv6Address(value).compressed


# --------------------------------------------------------------------------------- credentials

_B62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def aws_key(rng: random.Random) -> str:
    return rng.choice(["AKIA", "ASIA"]) + _chars(rng, _UPPER + "234567", 16)


def aws_secret(rng: random.Random) -> str:
    return _chars(rng, _B62 + "/+", 40)


def github_token(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"github_pat_{_chars(rng, _B62, 22)}_{_chars(rng, _B62, 59)}"
    return rng.choice(["ghp_", "gho_", "ghs_"]) + _chars(rng, _B62, 36)


def stripe_key(rng: random.Random) -> str:
    return rng.choice(["sk_live_", "rk_live_"]) + _chars(rng, _B62, rng.choice([24, 34, 99]))


def slack_token(rng: random.Random) -> str:
    return f"{rng.choice(['xoxb', 'xoxp'])}-{_digits(rng, 12)}-{_digits(rng, 13)}-{_chars(rng, _B62, 24)}"


def google_key(rng: random.Random) -> str:
    return "AIza" + _chars(rng, _B62 + "_-", 35)


def private_key(rng: random.Random) -> str:
    kind = rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    body = base64.b64encode(rng.randbytes(rng.choice([96, 144, 192]))).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----"


def jwt(rng: random.Random) -> str:
    header = {"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}
    payload = {"sub": _digits(rng, 8), "iat": 1700000000 + rng.randrange(10**7), "scope": "orders:read"}
    parts = [json.dumps(x, separators=(",", ":")).encode() for x in (header, payload)]
    return ".".join([_b64url(parts[0]), _b64url(parts[1]), _b64url(rng.randbytes(32))])


def password(rng: random.Random) -> str:
    words = ["Sunflower", "river", "Tiger", "maple", "Orbit", "copper", "Falcon", "winter", "Mango", "harbor"]
    style = _turn("password", 4)
    if style == 0:
        return f"{rng.choice(words)}{rng.randrange(10, 9999)}{rng.choice('!#$%&*?')}"
    if style == 1:
        return _chars(rng, _B62 + "!#%&*", rng.randrange(10, 20))
    if style == 2:
        return f"{rng.choice(words).lower()}-{rng.choice(words).lower()}-{rng.randrange(10, 99)}"
    return f"{rng.choice(words)}_{rng.choice(words)}{rng.randrange(1, 9)}"


def conn_string(rng: random.Random) -> tuple[str, int, int]:
    """A DSN with a password in it: only the password is labelled."""
    scheme = rng.choice(["postgresql", "mysql", "mongodb", "redis", "amqp"])
    user = rng.choice(["app", "admin", "svc_orders", "readonly", "etl"])
    host = rng.choice(["db.internal", "orders-db", "prod-db-1.eu-west-1.rds.amazonaws.com", "localhost"])
    secret = password(rng).replace("@", "a").replace(":", "x").replace("/", "9")
    prefix = f"{scheme}://{user}:"
    port = rng.choice([5432, 3306, 27017, 6379, 5672])
    return f"{prefix}{secret}@{host}:{port}/orders", len(prefix), len(prefix) + len(secret)


CREDENTIAL_KINDS = (aws_key, github_token, stripe_key, slack_token, google_key, jwt, private_key, aws_secret)


def credential(rng: random.Random) -> str:
    """Any token kind, in turn (for templates that do not say which kind it is)."""
    return CREDENTIAL_KINDS[_turn("credential", len(CREDENTIAL_KINDS))](rng)


# ------------------------------------------------------------------------------- national IDs


def _nino(rng: random.Random) -> str:
    first = rng.choice([c for c in _UPPER if c not in "DFIQUV"])
    second = rng.choice([c for c in _UPPER if c not in "DFIOQUV"])
    if first + second in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
        second = "A"
    return f"{first}{second}{_digits(rng, 6)}{rng.choice('ABCD')}"


def nino(rng: random.Random) -> str:
    """UK National Insurance number (no checksum: the prefix rules are all there is)."""
    value = _nino(rng)
    if rng.random() < 0.5:
        return f"{value[:2]} {value[2:4]} {value[4:6]} {value[6:8]} {value[8]}"
    return value


def _iso7064_11_10(digits: str) -> str:
    check = 5
    for d in digits:
        check = (((check or 10) * 2) % 11 + int(d)) % 10
    return str((1 - ((check or 10) * 2) % 11) % 10)


def _de_idnr_digits(rng: random.Random) -> str:
    while True:
        pool = rng.sample("0123456789", 9)
        body = pool + [rng.choice(pool)]
        rng.shuffle(body)
        if body[0] != "0":
            body_s = "".join(body)
            return body_s + _iso7064_11_10(body_s)


def _format_de_idnr(number: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}"
    return number


def de_idnr(rng: random.Random) -> str:
    """German tax ID (Steuerliche Identifikationsnummer), ISO 7064 mod 11,10."""
    return _format_de_idnr(_de_idnr_digits(rng), rng)


def _nir_digits(rng: random.Random) -> str:
    dept = rng.choice([d for d in range(1, 96) if d != 20])
    body = (
        f"{rng.choice('12')}{rng.randrange(40, 100):02d}{rng.randrange(1, 13):02d}{dept:02d}"
        f"{rng.randrange(1, 990):03d}{rng.randrange(1, 1000):03d}"
    )
    return body + f"{97 - int(body) % 97:02d}"


def _format_nir(number: str, rng: random.Random) -> str:
    if rng.random() < 0.6:
        n = number
        return f"{n[0]} {n[1:3]} {n[3:5]} {n[5:7]} {n[7:10]} {n[10:13]} {n[13:]}"
    return number


def fr_nir(rng: random.Random) -> str:
    """French social security number (NIR): 13 digits and a mod-97 key."""
    return _format_nir(_nir_digits(rng), rng)


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni(rng: random.Random) -> str:
    number = f"{rng.randrange(10**6, 10**8):08d}"
    return number + rng.choice(["", "", "-"]) + _DNI_LETTERS[int(number) % 23]


def es_nie(rng: random.Random) -> str:
    prefix, digits = rng.choice("XYZ"), _digits(rng, 7)
    return f"{prefix}{digits}{_DNI_LETTERS[int(str('XYZ'.index(prefix)) + digits) % 23]}"


def _bsn_digits(rng: random.Random) -> str:
    while True:
        body = str(rng.randrange(1, 10)) + _digits(rng, 7)
        check = sum((9 - i) * int(d) for i, d in enumerate(body)) % 11
        if check < 10:
            return body + str(check)


def nl_bsn(rng: random.Random) -> str:
    """Dutch citizen service number: nine digits passing the 11-test."""
    number = _bsn_digits(rng)
    return rng.choice([number, number, f"{number[:4]}.{number[4:6]}.{number[6:]}"])


_CF_ODD = dict(zip(_ALNUM, [1, 0, 5, 7, 9, 13, 15, 17, 19, 21] + [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18,
               20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23], strict=True))  # fmt: skip
_CF_EVEN = {ch: (int(ch) if ch.isdigit() else ord(ch) - ord("A")) for ch in _ALNUM}
_CF_MONTHS = "ABCDEHLMPRST"
_BELFIORE = ("H501", "F205", "L219", "G273", "D612", "A662", "F839", "L736", "C351", "A944")


def _cf_letters(word: str, given: bool) -> str:
    word = "".join(c for c in _fold(word).upper() if c.isalpha())
    consonants = [c for c in word if c not in "AEIOU"]
    vowels = [c for c in word if c in "AEIOU"]
    if given and len(consonants) >= 4:
        consonants = [consonants[0], consonants[2], consonants[3]]
    return "".join(consonants + vowels + ["X", "X", "X"])[:3]


def _cf_check(body: str) -> str:
    total = sum(_CF_ODD[c] for c in body[0::2]) + sum(_CF_EVEN[c] for c in body[1::2])
    return chr(ord("A") + total % 26)


def _cf_body(rng: random.Random, part: Part) -> str:
    day = rng.randrange(1, 29) + rng.choice([0, 40])
    return (
        _cf_letters(rng.choice(part.surnames), given=False)
        + _cf_letters(first_name(rng, part), given=True)
        + f"{rng.randrange(100):02d}{rng.choice(_CF_MONTHS)}{day:02d}{rng.choice(_BELFIORE)}"
    )


def it_cf(rng: random.Random, part: Part) -> str:
    """Italian codice fiscale: name letters, birth date and place, and a check letter."""
    body = _cf_body(rng, part)
    return body + _cf_check(body)


def national_id(rng: random.Random, part: Part) -> str:
    """Any national ID kind, in turn (for templates with a generic cue such as "my ID number")."""
    kinds: list[Callable[[], str]] = [
        lambda: nino(rng), lambda: de_idnr(rng), lambda: fr_nir(rng), lambda: es_dni(rng),
        lambda: es_nie(rng), lambda: nl_bsn(rng), lambda: it_cf(rng, part),
    ]  # fmt: skip
    return kinds[_turn("national_id", len(kinds))]()


def bad_national_id(rng: random.Random, part: Part) -> str:
    """A national ID whose check digit or letter is wrong: not a real ID, so not PII."""
    kind = _turn("bad_national_id", 5)
    if kind == 0:
        good = _de_idnr_digits(rng)
        return _format_de_idnr(good[:-1] + str((int(good[-1]) + rng.randrange(1, 10)) % 10), rng)
    if kind == 1:
        good = _nir_digits(rng)
        return _format_nir(good[:-2] + f"{(int(good[-2:]) + rng.randrange(1, 96)) % 97 + 1:02d}", rng)
    if kind == 2:
        number = f"{rng.randrange(10**6, 10**8):08d}"
        return number + _DNI_LETTERS[(int(number) + rng.randrange(1, 23)) % 23]
    if kind == 3:
        good = _bsn_digits(rng)
        return good[:-1] + str((int(good[-1]) + rng.randrange(1, 10)) % 10)
    body = _cf_body(rng, part)
    return body + chr(ord("A") + (ord(_cf_check(body)) - ord("A") + rng.randrange(1, 26)) % 26)


# ------------------------------------------------------------------------------ dates of birth

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]  # fmt: skip


def dob(rng: random.Random, part: Part) -> str:
    y, m, d = rng.randrange(1940, 2006), rng.randrange(1, 13), rng.randrange(1, 29)
    formats = [
        f"{d:02d}/{m:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{d} {_MONTHS[m - 1]} {y}",
        f"{_MONTHS[m - 1]} {d}, {y}", f"{m:02d}/{d:02d}/{y}", f"{d} {_MONTHS[m - 1][:3]} {y}",
    ]  # fmt: skip
    if part.name == "heldout":
        suffix = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(d, "th")
        formats += [f"{d}{suffix} {_MONTHS[m - 1]} {y}", f"{d}-{_MONTHS[m - 1][:3]}-{y}"]
    return formats[_turn("dob", len(formats))]


# ---------------------------------------------------------------------------- non-PII fillers


def order(rng: random.Random) -> str:
    return rng.choice(
        [f"#{rng.randrange(10000, 99999)}", f"{rng.randrange(10000, 99999)}", f"ORD-2024-{_digits(rng, 6)}"]
    )


def order9(rng: random.Random) -> str:
    """A bare 9-digit order number that fails the BSN 11-test (so it is no ID of any kind)."""
    while True:
        number = str(rng.randrange(1, 10)) + _digits(rng, 8)
        if sum((9 - i) * int(d) for i, d in enumerate(number[:-1])) % 11 != int(number[-1]):
            return number


def date(rng: random.Random) -> str:
    y, m, d = rng.randrange(2024, 2027), rng.randrange(1, 13), rng.randrange(1, 29)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return rng.choice(
        [f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}/{d:02d}/{y}", f"{d} {months[m - 1]} {y}"]
    )


def old_date(rng: random.Random) -> str:
    """A date in a birth-date range, with no birth cue (a contract or warranty date)."""
    y, m, d = rng.randrange(1970, 2006), rng.randrange(1, 13), rng.randrange(1, 29)
    return rng.choice([f"{d:02d}/{m:02d}/{y}", f"{y}-{m:02d}-{d:02d}", f"{d} {_MONTHS[m - 1]} {y}"])


def time_(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}",
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00",
        ]
    )


def amount(rng: random.Random) -> str:
    return rng.choice(
        [f"${rng.randrange(1, 3000):,}.{rng.randrange(100):02d}", f"€{rng.randrange(1, 999)}.99",
         f"{rng.randrange(1, 9)}.{rng.randrange(100, 999)},00 EUR", f"£{rng.randrange(5, 500)}"]
    )  # fmt: skip


def version(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{rng.randrange(1, 12)}.{rng.randrange(10)}.{rng.randrange(20)}",
            f"v{rng.randrange(1, 5)}.{rng.randrange(10)}",
            "10.0.19041.1",
            f"120.0.{rng.randrange(6000, 7000)}.{rng.randrange(10, 200)}",
            f"{rng.randrange(1, 5)}.{rng.randrange(20)}.{rng.randrange(10)}-rc.{rng.randrange(1, 5)}",
        ]
    )


def tracking(rng: random.Random) -> str:
    kind = _turn("tracking", 4)
    if kind == 0:
        return "1Z" + _chars(rng, "0123456789ABCDEFGHJKLMNPRSTUVWXYZ", 16)
    if kind == 1:  # Royal Mail / UPU S10
        return f"{rng.choice(['RR', 'CP', 'LX', 'EE'])}{_digits(rng, 9)}{rng.choice(['GB', 'DE', 'NL'])}"
    if kind == 2:  # USPS, 22 digits in groups
        return "9400 " + " ".join(_digits(rng, 4) for _ in range(4)) + f" {_digits(rng, 2)}"
    return "JJD" + _digits(rng, 18)  # DHL


def mac(rng: random.Random) -> str:
    return ":".join(f"{rng.randrange(256):02X}" for _ in range(6))


def isbn(rng: random.Random) -> str:
    body = "978" + _digits(rng, 9)
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    digits = body + str(check)
    if rng.random() < 0.5:
        return digits
    return f"{digits[:3]}-{digits[3]}-{digits[4:8]}-{digits[8:12]}-{digits[12]}"


def hex_digest(rng: random.Random) -> str:
    raw = rng.randbytes(32)
    kind = _turn("hex_digest", 3)
    if kind == 0:
        return hashlib.sha256(raw).hexdigest()
    if kind == 1:
        return hashlib.sha1(raw).hexdigest()  # a full git commit hash
    return hashlib.sha1(raw).hexdigest()[:7]  # an abbreviated one


def b64_blob(rng: random.Random) -> str:
    """Base64 that is not a token: a checksum header or an attachment fragment."""
    return base64.b64encode(rng.randbytes(rng.choice([16, 18, 21]))).decode()


def _plain(fn: Callable[[random.Random], str]) -> Callable[[random.Random, Part], str]:
    return lambda rng, part: fn(rng)


FILLERS: dict[str, Callable[[random.Random, Part], str]] = {
    "order": _plain(order),
    "order9": _plain(order9),
    "date": _plain(date),
    "old_date": _plain(old_date),
    "time": _plain(time_),
    "amount": _plain(amount),
    "version": _plain(version),
    "tracking": _plain(tracking),
    "mac": _plain(mac),
    "isbn": _plain(isbn),
    "hex": _plain(hex_digest),
    "uuid": lambda rng, part: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "b64": _plain(b64_blob),
    "bad_card": _plain(bad_card),
    "bad_iban": _plain(bad_iban),
    "bad_ssn": _plain(bad_ssn),
    "bad_id": bad_national_id,
    "brand": lambda rng, part: rng.choice(BRANDS),
    "product": lambda rng, part: rng.choice(PRODUCTS),
    "city": lambda rng, part: rng.choice(CITIES),
    "qty": lambda rng, part: str(rng.randrange(2, 60)),
    "zip": lambda rng, part: f"{rng.randrange(10000, 99999)}",
    "invoice": lambda rng, part: f"INV-{rng.randrange(2023, 2027)}-{_digits(rng, 5)}",
}


def _title_surname(rng: random.Random, part: Part) -> tuple[str, int, int]:
    title, surname = rng.choice(TITLES), rng.choice(part.surnames)
    return f"{title} {surname}", len(title) + 1, len(title) + 1 + len(surname)


# slot -> (generator, PII type); a generator returns the value, or (text, start, end) of the PII in it
PII_SLOTS: dict[str, tuple[Callable[[random.Random, Part], str | tuple[str, int, int]], str]] = {
    "first": (first_name, "person_name"),
    "full": (full_name, "person_name"),
    "lower_full": (lower_name, "person_name"),
    "title_surname": (_title_surname, "person_name"),
    "email": (email, "email"),
    "obf_email": (obfuscated_email, "email"),
    "phone": (phone, "phone"),
    "card": (_plain(card), "payment_card"),
    "iban": (_plain(iban), "iban"),
    "ssn": (_plain(ssn), "us_ssn"),
    "ssn_loose": (_plain(ssn_loose), "us_ssn"),
    "ipv4": (_plain(ipv4), "ip_address"),
    "ipv6": (_plain(ipv6), "ip_address"),
    "aws_key": (_plain(aws_key), "credential"),
    "aws_secret": (_plain(aws_secret), "credential"),
    "github_token": (_plain(github_token), "credential"),
    "stripe_key": (_plain(stripe_key), "credential"),
    "slack_token": (_plain(slack_token), "credential"),
    "google_key": (_plain(google_key), "credential"),
    "private_key": (_plain(private_key), "credential"),
    "jwt": (_plain(jwt), "credential"),
    "password": (_plain(password), "credential"),
    "conn_string": (lambda rng, part: conn_string(rng), "credential"),
    "credential": (_plain(credential), "credential"),
    "nino": (_plain(nino), "national_id"),
    "de_idnr": (_plain(de_idnr), "national_id"),
    "fr_nir": (_plain(fr_nir), "national_id"),
    "es_dni": (_plain(es_dni), "national_id"),
    "es_nie": (_plain(es_nie), "national_id"),
    "nl_bsn": (_plain(nl_bsn), "national_id"),
    "it_cf": (it_cf, "national_id"),
    "national_id": (national_id, "national_id"),
    "dob": (dob, "date_of_birth"),
}

# ------------------------------------------------------------------------------------ templates

# Used by both parts.
SHARED_PII_TEMPLATES = [
    "Hi, my name is {full} and I was charged twice for order {order}.",
    "Hello, this is {full}. My new phone number is {phone}.",
    "Please call me back on {phone}. Thanks, {first}",
    "Dear Support,\nmy card {card} was declined on {date}.\nRegards,\n{full}",
    "Refund to IBAN {iban} please, the account holder is {full}.",
    "I spoke with {full} from your billing team yesterday about order {order}.",
    "{first} from your team promised a callback by {date}.",
    "Can you update my email to {email}? Cheers, {first}",
    "Our server at {ipv4} keeps getting blocked by your firewall since {date}.",
    "Login attempts came from {ipv6} at {time}, that was not me.",
    "My SSN is {ssn}, please correct the tax form for {date}.",
    "Dear {title_surname}, your invoice {invoice} is attached.",
    "Customer {full} ({email}) reports that order {order} arrived damaged.",
    "Forwarded message from {full} <{email}>: the {product} stopped working after {qty} days.",
    "Please pass this to {first}, she handled my case last week.",
    "I'm {full}, the account owner, and I never ordered a {product}.",
    "Contact {full} on {phone} or at {email}.",
    "Wire the refund of {amount} to {iban}.",
    "The card I used was {card}, expiry {date}.",
    "Phone: {phone}\nEmail: {email}",
    "Hi {first}, thanks for the quick reply about order {order}!",
    "Best regards,\n{full}\n{phone}",
    "Can {first} check why the payment from {iban} bounced?",
    "Our VPN gateway {ipv4} and the backup {ipv4} both time out.",
    "SSN {ssn} was entered twice on my application.",
    "{full} here: please cancel order {order} and refund card {card}.",
    "Sincerely, {full}",
    "Thank you {first}! The {product} works again.",
    "The technician {full} visited on {date} at {time}.",
    "Reach me at {email} or {phone} after {time}.",
    "As discussed with {title_surname} on the phone, please close my account.",
    "my name is {full}, customer since {date}",
    "Hey {first}, the refund to {iban} still hasn't arrived.",
    "Please send the invoice to {email} and not to my old address.",
    "Blocked login from {ipv4} on {date}; my usual address is {ipv6}.",
    "I called {phone} three times today and nobody answered.",
    "Payment card {card}, billing contact {full}, {email}.",
    "According to {first} the replacement {product} ships on {date}.",
    "Dear {first},\nplease find the quote attached.\nKind regards, {full}",
    "Account holder: {full}; IBAN: {iban}; amount {amount}.",
    "Our deploy fails with AccessDenied; the access key in the config is {aws_key}.",
    "Here is the connection string we use: {conn_string}",
    "Login: {email}\npassword: {password}",
    "The API answers 401 for this bearer token: {jwt}",
    "My National Insurance number is {nino} and my payslip is wrong.",
    "My date of birth is {dob}, not {date} as your profile page shows.",
    "DOB: {dob}\nName: {full}",
    "My social security number is {ssn_loose}, the form keeps rejecting it.",
    "You can also write to {obf_email} if the contact form fails.",
    "cc {lower_full}",
]

# Development part only.
DEV_PII_TEMPLATES = [
    "I accidentally pasted my GitHub token {github_token} in the last ticket, please delete it.",
    "The webhook uses Stripe key {stripe_key} and started failing at {time}.",
    "Slack bot token {slack_token} stopped working after the workspace migration.",
    "The maps widget on our shop is configured with API key {google_key}.",
    "Attaching the key so you can check the format:\n{private_key}",
    "aws_secret_access_key = {aws_secret}",
    "Our monitoring leaked this token in a log line: {credential}",
    "Steuer-ID {de_idnr}, please put it on the invoice.",
    "For the reimbursement form, my numéro de sécurité sociale is {fr_nir}.",
    "DNI {es_dni}, please update the billing address.",
    "I live in Spain with NIE {es_nie}, can you change the invoice?",
    "BSN {nl_bsn} shows up on someone else's account.",
    "Codice fiscale: {it_cf}",
    "For identity verification my ID number is {national_id}.",
    "I was born on {dob} and the age check still blocks me.",
    "Date of birth: {dob}",
    "SSN: {ssn_loose}",
    "I already spoke with {full} yesterday and nothing happened.",
    "{full} said the courier would come on {date}.",
    "thanks, forwarding to {lower_full} who handles refunds.",
    "Email me at {obf_email} please, I don't trust the form.",
    "New number: {phone}. Old one was {phone}.",
]

# Held-out part only: other phrasings and positions, never seen during tuning.
HELDOUT_PII_TEMPLATES = [
    "Heads up: a contractor committed {github_token} to a public repo on {date}.",
    "Stripe shows errors for {stripe_key} since this morning, can you rotate it?",
    "Found this in the CI output, is it ours? {credential}",
    "We rotated {aws_key} but the old secret {aws_secret} still works.",
    "the staging DSN is {conn_string} - please don't share it",
    "My password is {password} and it no longer lets me in.",
    "Jenkins printed pwd: {password} in the build log at {time}.",
    "Slack integration ({slack_token}) was revoked by someone on your side.",
    "Key for the geocoding API: {google_key}",
    "Session cookie value {jwt} expired after five minutes.",
    "Please remove the key I posted:\n{private_key}\nThanks.",
    "NI number {nino} - employer says you have it wrong.",
    "Meine Steuer-Identifikationsnummer lautet {de_idnr}.",
    "N° de sécurité sociale : {fr_nir}",
    "Número de DNI {es_dni} / NIE {es_nie} for the two account holders.",
    "Burgerservicenummer {nl_bsn} is linked to my old address.",
    "The invoice needs my codice fiscale {it_cf} for the tax deduction.",
    "Identity document number {national_id}, issued last year.",
    "D.O.B. {dob} - I'm definitely over eighteen.",
    "Birthday on the account should be {dob}, please fix it.",
    "born on {dob} in {city}, if you need it for verification",
    "social security no. {ssn_loose} (the last four digits are right on the form)",
    "Ping {full} in accounting, they know about invoice {invoice}.",
    "We had a call with {full} and {full} on {date}.",
    "looping in {lower_full} and {lower_full}",
    "write to me at {obf_email} instead",
    "My mobile is {phone}, landline {phone}.",
    "Please reach {title_surname} at {email} about the {product}.",
]

SHARED_NEGATIVE_TEMPLATES = [
    "Order {order} was placed on {date} at {time} and still shows as pending.",
    "Invoice {invoice} for {amount} is due on {date}.",
    "Will you refund the {product} or send a replacement?",
    "May I ask why order {order} was cancelled on {date}?",
    "Mark this ticket as urgent please, the {product} broke after {qty} days.",
    "June invoice shows {amount} but I was charged {amount} in July.",
    "Grace period for the payment ends on {date}.",
    "Hope you can help, the app crashes on version {version}.",
    "Frank feedback: the checkout on version {version} is far too slow.",
    "Reference {bad_card} from the payment terminal does not match our records.",
    "The sandbox test account {bad_iban} fails validation, as expected.",
    "Your form rejects {bad_ssn} as an SSN, which is correct.",
    "Tracking number {tracking} has not updated since {date}.",
    "Router MAC {mac} shows up twice in the device list.",
    "Please ship to {zip} {city} instead.",
    "Our {city} office will be closed on {date}.",
    "Apple Pay failed three times; Google Pay works fine.",
    "Ticket {order} (priority High) was reopened at {time}.",
    "The update to {version} fixed it. Thanks!",
    "Thanks for the quick reply, everything works now.",
    "Dear Customer, we received your request and will answer within {qty} hours.",
    "Hi Team, the export at {time} failed with error 502.",
    "Amount {amount} was charged {qty} times on {date}.",
    "Call volume was 1,234,567 minutes last quarter, up {qty}% on {date}.",
    "Chrome {version} shows a blank page after login.",
    "Error code 0x80070005 when syncing, build {version}.",
    "Postcode SW1A 1AA, delivery slot 14:00-16:00 on {date}.",
    "I was on hold for {qty} minutes at {time} on {date}.",
    "My loyalty number is {zip} and the voucher code is SAVE{qty}.",
    "Order ORD-2024-118723 and invoice {invoice} don't match.",
    "Will the {product} be back in stock before {date}?",
    "Jordan sneakers in size 44 are listed twice in order {order}.",
    "Paris and {city} warehouses both show zero stock.",
    "Hello? Is anyone reading these tickets?",
    "Best price I found was {amount} at a competitor.",
    "This is Unacceptable, order {order} is {qty} days late.",
    "I saw an ad for {brand} on your checkout page, is that a partner of yours?",
    "Request id {uuid} failed at {time}.",
    "The bug was fixed in commit {hex}, please deploy it.",
    "password: please reset it, I can't log in",
    "Order number {order9} still shows as processing.",
    "The validator rejects {bad_id}, and it should: that ID has a wrong check digit.",
    "Book ISBN {isbn} was delivered instead of the one I ordered.",
    "Content-MD5 header is {b64} but the upload still fails.",
    "Warranty started on {old_date}, so it should still be valid.",
]
DEV_NEGATIVE_TEMPLATES = [
    "We bought {brand} merchandise for the team event; the invoice is {invoice}.",
    "Checksum SHA-256 {hex} does not match the download.",
    "Parcel {tracking} was returned to the sender.",
    "The date of birth field on the form won't accept my input.",
    "Reset password link expired after {qty} minutes.",
    "Customer since {old_date}, first time I have had a problem.",
    "Release {version} (build {hex}) broke the export.",
    "Reference {uuid} appears twice in the report.",
]
HELDOUT_NEGATIVE_TEMPLATES = [
    "Do you ship {brand} products to {city} as well?",
    "Please reopen case {uuid}, the answer did not help.",
    "Our mirror shows artefact digest {hex} for {version}.",
    "Shipment {tracking} is stuck in customs since {date}.",
    "Your password policy is too strict, I can't pick a new one.",
    "The contract was signed on {old_date} and renewed on {date}.",
    "Please quote order {order9} in every reply.",
    "Test vector {bad_id} is correctly refused by the signup form.",
    "Catalogue ISBN {isbn} has the wrong cover image.",
    "Attachment chunk {b64} could not be decoded.",
]

# The development lists under their historical names (bench/pii_scan.py draws sentences from them).
PII_TEMPLATES = SHARED_PII_TEMPLATES + DEV_PII_TEMPLATES
NEGATIVE_TEMPLATES = SHARED_NEGATIVE_TEMPLATES + DEV_NEGATIVE_TEMPLATES

DEV = Part(
    name="dev",
    seed=SEED,
    out=OUT,
    first_common=tuple(COMMON_FIRST),
    first_rare=tuple(RARE_FIRST),
    surnames=tuple(SURNAMES),
    domains=DOMAINS,
    pii_templates=tuple(PII_TEMPLATES),
    negative_templates=tuple(NEGATIVE_TEMPLATES),
)
HELDOUT = Part(
    name="heldout",
    seed=HELDOUT_SEED,
    out=HELDOUT_OUT,
    first_common=tuple(COMMON_FIRST),
    first_rare=tuple(HELDOUT_FIRST),
    surnames=tuple(SURNAMES[::2] + HELDOUT_SURNAMES + HELDOUT_SURNAMES),
    domains=HELDOUT_DOMAINS,
    pii_templates=tuple(SHARED_PII_TEMPLATES + HELDOUT_PII_TEMPLATES),
    negative_templates=tuple(SHARED_NEGATIVE_TEMPLATES + HELDOUT_NEGATIVE_TEMPLATES),
)
PARTS = {"dev": DEV, "heldout": HELDOUT}


def _fill(template: str, rng: random.Random, part: Part = DEV) -> dict[str, object]:
    text = ""
    spans: list[dict[str, object]] = []
    pos = 0
    for m in re.finditer(r"\{(\w+)\}", template):
        text += template[pos : m.start()]
        slot = m.group(1)
        if slot in PII_SLOTS:
            generate, pii_type = PII_SLOTS[slot]
            made = generate(rng, part)
            value, start, end = made if isinstance(made, tuple) else (made, 0, len(made))
            spans.append({"start": len(text) + start, "end": len(text) + end, "type": pii_type})
        else:
            value = FILLERS[slot](rng, part)
        text += value
        pos = m.end()
    text += template[pos:]
    return {"text": text, "spans": spans}


def _slot_types(template: str) -> set[str]:
    return {PII_SLOTS[s][1] for s in re.findall(r"\{(\w+)\}", template) if s in PII_SLOTS}


def build(seed: int | None = None, n_lines: int | None = None, part: Part = DEV) -> list[dict[str, object]]:
    """The part as a list of records; every call with the same arguments returns the same list."""
    _turns.clear()
    rng = random.Random(part.seed if seed is None else seed)
    n_lines = part.n_lines if n_lines is None else n_lines
    pii, negatives = list(part.pii_templates), list(part.negative_templates)
    types = sorted(set().union(*(_slot_types(t) for t in pii)))
    by_type = {t: [tpl for tpl in pii if t in _slot_types(tpl)] for t in types}
    records = []
    for i in range(n_lines):
        # Cover every template once, then sample: a fifth negatives, the rest for each type in turn.
        if i < len(pii):
            template = pii[i]
        elif i < len(pii) + len(negatives):
            template = negatives[i - len(pii)]
        elif rng.random() < 0.2:
            template = rng.choice(negatives)
        else:
            template = rng.choice(by_type[types[i % len(types)]])
        records.append(_fill(template, rng, part))
    return records


def render(records: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


_STDNUM_CHECKS = {  # kind of ID -> the python-stdnum module that validates it
    "de_idnr": "stdnum.de.idnr",
    "fr_nir": "stdnum.fr.nir",
    "es_dni": "stdnum.es.dni",
    "es_nie": "stdnum.es.nie",
    "nl_bsn": "stdnum.nl.bsn",
    "it_cf": "stdnum.it.codicefiscale",
}


def _stdnum_kind(value: str) -> str | None:
    compact = re.sub(r"[ .\-]", "", value)
    if re.fullmatch(r"[A-Z]{6}\d\d[A-Z]\d\d[A-Z]\d{3}[A-Z]", compact):
        return "it_cf"
    if re.fullmatch(r"\d{8}[A-Z]", compact):
        return "es_dni"
    if re.fullmatch(r"[XYZ]\d{7}[A-Z]", compact):
        return "es_nie"
    return {9: "nl_bsn", 11: "de_idnr", 15: "fr_nir"}.get(len(compact)) if compact.isdigit() else None


def check_with_stdnum(parts: dict[str, list[dict[str, object]]]) -> int:
    """Every labelled national ID (other than a NINO) must be valid for python-stdnum; returns how many."""
    import importlib

    checked = 0
    for name, records in parts.items():
        for record in records:
            for span in record["spans"]:  # type: ignore[attr-defined]
                value = str(record["text"])[span["start"] : span["end"]]
                kind = _stdnum_kind(value) if span["type"] == "national_id" else None
                if kind is None:
                    continue
                if not importlib.import_module(_STDNUM_CHECKS[kind]).is_valid(value):
                    raise ValueError(f"{name}: {value!r} is not a valid {kind}")
                checked += 1
    return checked


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    built = {name: build(part=part) for name, part in PARTS.items()}
    for name, records in built.items():
        PARTS[name].out.write_text(render(records), encoding="utf-8")
        per_type = Counter(s["type"] for r in records for s in r["spans"])  # type: ignore[attr-defined]
        log.info("wrote %s: %d lines, %s", PARTS[name].out, len(records), dict(sorted(per_type.items())))
    try:
        log.info("python-stdnum: %d national IDs valid", check_with_stdnum(built))
    except ModuleNotFoundError:
        log.info("python-stdnum is not installed: national ID checksums not cross-checked")


if __name__ == "__main__":
    main()
