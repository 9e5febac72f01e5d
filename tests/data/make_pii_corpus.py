"""Generate tests/data/pii_corpus.jsonl: support-ticket sentences with exact PII span labels.

Why a generated corpus: precision and recall of the PII detectors need ground truth, and real tickets
cannot be committed. Every line is ``{"text": ..., "spans": [{"start", "end", "type"}]}``; about a
quarter of the lines are hard negatives (dates, order numbers, versions, Luhn-invalid card numbers,
IBANs with a wrong checksum, invalid SSN areas, capitalised words that are also first names).

To keep the measurement honest, the names and formats here are written independently of the
detector: the first-name list below was not copied from llmops/privacy/data/first_names.txt and
includes names from cultures the gazetteer does not cover, ambiguous names (Mark, Grace) used in
running text, and phone formats the detector rejects on purpose (bare 10-digit US numbers).

Deterministic: the same seed always yields the same file. Run from the repository root:

    python tests/data/make_pii_corpus.py
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import random
import re
import unicodedata
from pathlib import Path

log = logging.getLogger("make_pii_corpus")

SEED = 20260105
N_LINES = 600
OUT = Path(__file__).with_name("pii_corpus.jsonl")

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

DOMAINS = (
    "example.com", "mail.example.org", "posteo.de", "gmx.net", "outlook.fr", "company.co.uk",
    "uni-hamburg.de", "example.io", "shop-support.eu", "icloud.com",
)  # fmt: skip
PRODUCTS = ("trail backpack", "rain jacket", "hiking boots", "router", "smart plug", "e-bike battery")
CITIES = ("Berlin", "Lyon", "Madrid", "Rotterdam", "Kraków", "Milan", "Leeds", "Porto", "Florence", "Sydney")
TITLES = ("Mr", "Mrs", "Ms", "Dr", "Mr.", "Ms.")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(str(rng.randrange(10)) for _ in range(n))


def _fold(text: str) -> str:
    text = text.replace("ł", "l").replace("ø", "o").replace("'", "")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


# ---------------------------------------------------------------------------------- PII values


def first_name(rng: random.Random) -> str:
    return rng.choice(RARE_FIRST) if rng.random() < 0.25 else rng.choice(COMMON_FIRST)


def full_name(rng: random.Random) -> str:
    return f"{first_name(rng)} {rng.choice(SURNAMES)}"


def email(rng: random.Random) -> str:
    first = _fold(first_name(rng)).lower()
    last = _fold(rng.choice(SURNAMES)).lower().replace(" ", "")
    local = rng.choice(
        [f"{first}.{last}", f"{first[0]}.{last}", f"{first}{last}{rng.randrange(1, 99)}", f"{first}_{last}",
         f"{first}+orders", f"{last}.{first}", f"{first}{rng.randrange(1970, 2005)}"]
    )  # fmt: skip
    address = f"{local}@{rng.choice(DOMAINS)}"
    if rng.random() < 0.1:  # people do write Anna.Schmidt@Example.com
        address = address.title()
    return address


def _us(rng: random.Random) -> tuple[str, str, str]:
    return (
        f"{rng.randrange(2, 10)}{_digits(rng, 2)}",
        f"{rng.randrange(2, 10)}{_digits(rng, 2)}",
        _digits(rng, 4),
    )


_phone_turn = itertools.count()


def phone(rng: random.Random) -> str:
    """Formats are used in turn, so each (including ones the detector rejects) gets its fair share."""
    a, b, c = _us(rng)
    formats = [
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
        lambda: f"+1 ({a}) {b}-{c}",
        lambda: f"({a}) {b}-{c}",
        lambda: f"{a}-{b}-{c}",
        lambda: f"{a}.{b}.{c}",
        lambda: f"1-800-{b}-{c}",
        lambda: f"+1-{a}-{b}-{c}",
        lambda: f"{a}{b}{c}",  # bare 10 digits: rejected by the detector on purpose (precision)
        lambda: "+33 6 " + " ".join(_digits(rng, 2) for _ in range(4)),
        lambda: "06 " + " ".join(_digits(rng, 2) for _ in range(4)),
        lambda: "06." + ".".join(_digits(rng, 2) for _ in range(4)),
        lambda: f"+34 6{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+39 06 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"+31 20 {_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"+48 5{_digits(rng, 2)} {_digits(rng, 3)} {_digits(rng, 3)}",
        lambda: f"+91 9{_digits(rng, 4)} {_digits(rng, 5)}",
        lambda: f"9{_digits(rng, 4)} {_digits(rng, 5)}",
        lambda: f"+86 138 {_digits(rng, 4)} {_digits(rng, 4)}",
        lambda: f"+971 50 {_digits(rng, 3)} {_digits(rng, 4)}",
        lambda: f"0{rng.randrange(2, 10)}{_digits(rng, 2)}/{_digits(rng, 6)}",
    ]
    return formats[next(_phone_turn) % len(formats)]()


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


def _iban_check(country: str, bban: str) -> int:
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return 98 - int(numeric) % 97


def _iban_parts(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(_IBAN_BBAN))
    alphabet = {
        "n": "0123456789",
        "a": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "c": "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    }
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


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


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


# ---------------------------------------------------------------------------- non-PII fillers


def order(rng: random.Random) -> str:
    return rng.choice(
        [f"#{rng.randrange(10000, 99999)}", f"{rng.randrange(10000, 99999)}", f"ORD-2024-{_digits(rng, 6)}"]
    )


def date(rng: random.Random) -> str:
    y, m, d = rng.randrange(2024, 2027), rng.randrange(1, 13), rng.randrange(1, 29)
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return rng.choice(
        [f"{y}-{m:02d}-{d:02d}", f"{d:02d}.{m:02d}.{y}", f"{m:02d}/{d:02d}/{y}", f"{d} {months[m - 1]} {y}"]
    )


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
        ]
    )


def tracking(rng: random.Random) -> str:
    return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))


def mac(rng: random.Random) -> str:
    return ":".join(f"{rng.randrange(256):02X}" for _ in range(6))


FILLERS = {
    "order": order,
    "date": date,
    "time": time_,
    "amount": amount,
    "version": version,
    "tracking": tracking,
    "mac": mac,
    "bad_card": bad_card,
    "bad_iban": bad_iban,
    "bad_ssn": bad_ssn,
    "product": lambda rng: rng.choice(PRODUCTS),
    "city": lambda rng: rng.choice(CITIES),
    "qty": lambda rng: str(rng.randrange(2, 60)),
    "zip": lambda rng: f"{rng.randrange(10000, 99999)}",
    "invoice": lambda rng: f"INV-{rng.randrange(2023, 2027)}-{_digits(rng, 5)}",
}


def _title_surname(rng: random.Random) -> tuple[str, int]:
    title = rng.choice(TITLES)
    return f"{title} {rng.choice(SURNAMES)}", len(title) + 1


# slot -> (generator, PII type or None)
PII_SLOTS = {
    "first": (first_name, "person_name"),
    "full": (full_name, "person_name"),
    "email": (email, "email"),
    "phone": (phone, "phone"),
    "card": (card, "payment_card"),
    "iban": (iban, "iban"),
    "ssn": (ssn, "us_ssn"),
    "ipv4": (ipv4, "ip_address"),
    "ipv6": (ipv6, "ip_address"),
}

PII_TEMPLATES = [
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
]

NEGATIVE_TEMPLATES = [
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
]


def _fill(template: str, rng: random.Random) -> dict[str, object]:
    text = ""
    spans: list[dict[str, object]] = []
    pos = 0
    for m in re.finditer(r"\{(\w+)\}", template):
        text += template[pos : m.start()]
        slot = m.group(1)
        if slot == "title_surname":
            value, offset = _title_surname(rng)
            spans.append({"start": len(text) + offset, "end": len(text) + len(value), "type": "person_name"})
        elif slot in PII_SLOTS:
            generate, pii_type = PII_SLOTS[slot]
            value = generate(rng)
            spans.append({"start": len(text), "end": len(text) + len(value), "type": pii_type})
        else:
            value = FILLERS[slot](rng)
        text += value
        pos = m.end()
    text += template[pos:]
    return {"text": text, "spans": spans}


def build(seed: int = SEED, n_lines: int = N_LINES) -> list[dict[str, object]]:
    """The corpus as a list of records; every call with the same arguments returns the same list."""
    global _phone_turn
    _phone_turn = itertools.count()
    rng = random.Random(seed)
    records = []
    for i in range(n_lines):
        # Cover every template at least once, then sample (about a quarter negatives).
        if i < len(PII_TEMPLATES):
            template = PII_TEMPLATES[i]
        elif i < len(PII_TEMPLATES) + len(NEGATIVE_TEMPLATES):
            template = NEGATIVE_TEMPLATES[i - len(PII_TEMPLATES)]
        else:
            pool = NEGATIVE_TEMPLATES if rng.random() < 0.2 else PII_TEMPLATES
            template = rng.choice(pool)
        records.append(_fill(template, rng))
    return records


def render(records: list[dict[str, object]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    records = build()
    OUT.write_text(render(records), encoding="utf-8")
    n_spans = sum(len(r["spans"]) for r in records)  # type: ignore[arg-type]
    log.info("wrote %s: %d lines, %d labelled spans", OUT, len(records), n_spans)


if __name__ == "__main__":
    main()
