"""Synthetic customer-support tickets: the vocabulary (names, products, cities, intents and their
texts) and one ticket, with the personal data planted in it recorded (see ``Planted``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random
    from datetime import datetime

CATEGORIES = ("billing", "shipping", "account", "technical")

FIRST_NAMES = (
    "Anna",
    "Lukas",
    "Sofia",
    "Mateo",
    "Emma",
    "Noah",
    "Chloe",
    "Liam",
    "Mia",
    "Jonas",
    "Lea",
    "Oliver",
    "Camille",
    "Hugo",
    "Giulia",
    "Marco",
    "Sanne",
    "Daan",
    "Zofia",
    "Jakub",
    "Priya",
    "Arjun",
    "Wei",
    "Mei",
    "Omar",
    "Layla",
    "Carlos",
    "Lucia",
    "Ethan",
    "Grace",
    "Felix",
    "Ines",
    "Nora",
    "Elias",
)
LAST_NAMES = (
    "Schmidt",
    "Müller",
    "Rossi",
    "García",
    "Martin",
    "Dubois",
    "Jansen",
    "Kowalski",
    "Sharma",
    "Patel",
    "Chen",
    "Wang",
    "Haddad",
    "Fernández",
    "Smith",
    "Johnson",
    "Becker",
    "Novak",
    "Larsen",
    "Costa",
)
AGENTS = ("Maya", "Tom", "Elena", "Sam")
PRODUCTS = (
    "trail backpack",
    "rain jacket",
    "hiking boots",
    "sleeping bag",
    "camping stove",
    "trekking poles",
)
CITIES = ("Berlin", "Lyon", "Madrid", "Rotterdam", "Kraków", "Milan", "Leeds", "Porto")

# intent -> (category, subjects, bodies, resolution)
INTENTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str]] = {
    "charged_twice": (
        "billing",
        ("Charged twice for order {order}", "Double charge on my card"),
        (
            "Hello, I was charged twice for order {order} ({product}). Please refund the duplicate payment.",
            "My card statement shows two identical charges for order {order}. Can you fix this?",
        ),
        "We are sorry about the double charge on order {order}. We have refunded the duplicate payment; "
        "it will appear on your statement within 5 business days.",
    ),
    "refund_request": (
        "billing",
        ("Refund for returned {product}", "Where is my refund?"),
        (
            "I returned the {product} from order {order} two weeks ago but have not received my refund yet.",
            "The {product} went back to your warehouse last week. When will I get my money back for order {order}?",
        ),
        "Thank you for returning the {product}. Your refund for order {order} has been approved and will "
        "reach your original payment method within 7 business days.",
    ),
    "invoice_copy": (
        "billing",
        ("Invoice needed for order {order}", "Copy of invoice please"),
        (
            "Could you send me a copy of the invoice for order {order}? I need it for my expenses.",
            "I need an invoice with VAT for order {order} for my company.",
        ),
        "We have attached the invoice for order {order} to your account. You can download it any time "
        "under Orders in your profile.",
    ),
    "late_delivery": (
        "shipping",
        ("Order {order} has not arrived", "Late delivery of {product}"),
        (
            "My order {order} was supposed to arrive on Monday but I still have nothing. I live in {city}.",
            "The tracking for order {order} has not moved for five days. Where is my {product}?",
        ),
        "We are sorry your order {order} is late. The carrier has confirmed a new delivery date within "
        "3 days and we have upgraded your shipping at no cost.",
    ),
    "wrong_address": (
        "shipping",
        ("Change delivery address for {order}", "Wrong address on order {order}"),
        (
            "I made a mistake in the delivery address for order {order}. I moved to {city} last month.",
            "Please update the shipping address of order {order}, the street name is wrong.",
        ),
        "We have updated the delivery address for order {order}. The parcel has not shipped yet, so it "
        "will go to the new address.",
    ),
    "damaged_item": (
        "shipping",
        ("Damaged {product}", "{product} arrived broken"),
        (
            "The {product} from order {order} arrived damaged, the box was crushed.",
            "My {product} came broken. Order {order}. I would like a replacement.",
        ),
        "We are sorry the {product} arrived damaged. A free replacement for order {order} is on its way "
        "and you can keep or recycle the damaged item.",
    ),
    "password_reset": (
        "account",
        ("Cannot log in", "Password reset link not working"),
        (
            "I forgot my password and the reset link in the email has expired.",
            "The password reset email never arrives. I cannot access my account.",
        ),
        "We have sent you a new password reset link that is valid for 24 hours. Please also check your "
        "spam folder.",
    ),
    "delete_account": (
        "account",
        ("Please delete my account", "Close my account and data"),
        (
            "I no longer use the shop. Please delete my account and all my personal data.",
            "Under GDPR I ask you to erase my customer account and personal data.",
        ),
        "We have received your erasure request. Your account and personal data will be deleted within "
        "30 days and we will confirm by email when it is done.",
    ),
    "app_crash": (
        "technical",
        ("App crashes on checkout", "The app keeps crashing"),
        (
            "The mobile app crashes every time I open the checkout page for my {product}.",
            "Your app closes itself when I try to pay. I am on the latest phone update.",
        ),
        "Thank you for reporting the crash. Please update the app to version 5.2, which fixes the checkout "
        "problem, and restart your phone.",
    ),
    "login_error": (
        "technical",
        ("Error 403 when logging in", "Login error on website"),
        (
            "When I log in on the website I get error 403 after entering my password.",
            "The website shows an error after login and sends me back to the start page.",
        ),
        "The login error was caused by an outdated browser cookie. Please clear your cookies for our site "
        "and sign in again; it should work now.",
    ),
}


def luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def iban_de(rng: random.Random) -> str:
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    numeric = int(bban + "131400")  # D=13, E=14, check digits 00
    check = 98 - numeric % 97
    iban = f"DE{check:02d}{bban}"
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def phone_number(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return f"+49 30 {rng.randrange(1000000, 9999999)}"
    if style == 1:
        return f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    return f"+1 ({rng.randrange(200, 999)}) {rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}"


@dataclass
class Planted:
    email: set[str] = field(default_factory=set)
    phone: set[str] = field(default_factory=set)
    payment_card: set[str] = field(default_factory=set)
    iban: set[str] = field(default_factory=set)
    person_name: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, list[str]]:
        return {k: sorted(v) for k, v in self.__dict__.items()}


def ticket(rng: random.Random, ticket_id: str, created: datetime, planted: Planted) -> dict[str, Any]:
    return ticket_parts(rng, ticket_id, created, planted)[0]


def ticket_parts(
    rng: random.Random, ticket_id: str, created: datetime, planted: Planted
) -> tuple[dict[str, Any], str, dict[str, str]]:
    """A ticket plus its intent and slots (reply reviews write worse drafts of the same answer)."""
    intent = rng.choice(sorted(INTENTS))
    category, subjects, bodies, resolution = INTENTS[intent]
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    slots = {
        "order": f"#{rng.randrange(10000, 99999)}",
        "product": rng.choice(PRODUCTS),
        "city": rng.choice(CITIES),
    }
    email = f"{first.lower()}.{last.lower().replace('ü', 'ue').replace('í', 'i').replace('á', 'a')}{rng.randrange(10, 99)}@example.com"
    phone = phone_number(rng)
    body = rng.choice(bodies).format(**slots)
    extras = []
    roll = rng.random()
    if roll < 0.35:
        extras.append(f"You can reach me at {email} or {phone}.")
        planted.email.add(email)
        planted.phone.add(phone)
    elif roll < 0.5:
        card = luhn_card(rng)
        extras.append(f"The card I used ends in the number {card}.")
        planted.payment_card.add(card)
    elif roll < 0.6:
        iban = iban_de(rng)
        extras.append(f"Please send the money to my IBAN {iban}.")
        planted.iban.add(iban)
    elif roll < 0.75:
        extras.append(f"Call me on {phone} if needed.")
        planted.phone.add(phone)
    sign_off = rng.random()
    if sign_off < 0.5:
        extras.append(f"Thanks, {first} {last}")
        planted.person_name.add(f"{first} {last}")
    elif sign_off < 0.7:
        body = f"Hi, my name is {first} {last}. " + body
        planted.person_name.add(f"{first} {last}")
    agent = rng.choice(AGENTS)
    answer = f"Hi {first}, " + resolution.format(**slots) + f" Best regards, {agent} from Northwind Support"
    ticket = {
        "ticket_id": ticket_id,
        "created_at": created.isoformat(timespec="seconds"),
        "customer_email": email,
        "customer_name": f"{first} {last}",
        "customer_phone": phone,
        "category": category,
        "subject": rng.choice(subjects).format(**slots),
        "body": " ".join([body, *extras]),
        "resolution": answer,
    }
    return ticket, intent, {**slots, "first": first, "agent": agent}


COLUMNS = (
    "ticket_id",
    "created_at",
    "customer_email",
    "customer_name",
    "customer_phone",
    "category",
    "subject",
    "body",
    "resolution",
)
