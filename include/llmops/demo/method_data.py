"""The data of the other two training methods, in the demo's tickets.db: the internal knowledge base
(``kb_articles``, for continued pre-training) and reviewed replies (``reply_reviews``: the reply QA
preferred and a worse draft, for preference tuning), each from a random stream of its own."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from llmops.demo.tickets import (
    CITIES,
    FIRST_NAMES,
    INTENTS,
    LAST_NAMES,
    PRODUCTS,
    Planted,
    iban_de,
    phone_number,
    ticket_parts,
)

# --------------------------------------------------------------------------------------------------
# Knowledge base (continued pre-training) and reply reviews (preference tuning)
# --------------------------------------------------------------------------------------------------
# Facts stay fixed across articles and agree with the ticket resolutions above (refund in 7 business
# days, duplicate charge in 5, reset link valid 24 hours, erasure within 30 days, app version 5.2), so
# a model trained on the articles learns one consistent domain.

WARRANTY_YEARS = {
    "trail backpack": 5,
    "rain jacket": 2,
    "hiking boots": 2,
    "sleeping bag": 3,
    "camping stove": 1,
    "trekking poles": 3,
}
WARRANTY_COVERS = {
    "trail backpack": "seams, zips, buckles and the frame",
    "rain jacket": "seams, zips and the waterproof membrane",
    "hiking boots": "soles, stitching and eyelets",
    "sleeping bag": "zips, baffles and stitching",
    "camping stove": "the burner, the valve and the igniter",
    "trekking poles": "the locking mechanism, the shafts and the tips",
}
WARRANTY_EXCLUDES = {
    "trail backpack": "abrasion from normal use and damage from overloading beyond 25 kg",
    "rain jacket": "tears from sharp objects and damage from washing with fabric softener",
    "hiking boots": "worn-out tread and damage from drying the boots next to a heater",
    "sleeping bag": "loss of loft from storing the bag compressed and damage from open flames",
    "camping stove": "damage from third-party gas cartridges and a clogged jet",
    "trekking poles": "bent shafts from using the poles as a lever",
}
CITY_SHIPPING = {
    "Berlin": ("DHL", 2),
    "Lyon": ("Colissimo", 3),
    "Madrid": ("SEUR", 4),
    "Rotterdam": ("PostNL", 2),
    "Kraków": ("InPost", 3),
    "Milan": ("BRT", 4),
    "Leeds": ("Royal Mail", 5),
    "Porto": ("CTT", 5),
}
RETURN_WINDOW_DAYS = 30
STAFF = (
    ("Hannah", "Vogel"),
    ("Pieter", "Bakker"),
    ("Marta", "Nowak"),
    ("Luca", "Bianchi"),
    ("Ruth", "Okafor"),
    ("Tobias", "Keller"),
)
REVIEWERS = ("Ingrid Solberg", "Nadia Mensah", "Ana Ribeiro", "Sven Larsson")
KB_COLUMNS = ("article_id", "updated_at", "author_email", "author_name", "product", "title", "body")
REVIEW_COLUMNS = (
    "review_id",
    "created_at",
    "category",
    "subject",
    "body",
    "chosen_reply",
    "rejected_reply",
    "reviewer_name",
)
KB_SEED_OFFSET = 2000  # own random streams: the ticket and corpus streams stay byte-identical
REVIEW_SEED_OFFSET = 3000
KB_GENERAL_PRODUCT = "all"  # the product column of articles about no single product
PLURAL_PRODUCTS = frozenset({"hiking boots", "trekking poles"})


def _a(product: str) -> str:
    """'a rain jacket' but 'hiking boots': articles read as written English, not template output."""
    return product if product in PLURAL_PRODUCTS else f"a {product}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _kb_shipping(rng: random.Random) -> tuple[str, str, list[str]]:
    city = rng.choice(CITIES)
    carrier, days = CITY_SHIPPING[city]
    title = rng.choice(
        (
            "Shipping to {city}: carrier and delivery time",
            "How long does delivery to {city} take?",
            "Delivery to {city} explained",
        )
    ).format(city=city)
    facts = [
        f"Orders to {city} are delivered by {carrier} within {days} business days of dispatch.",
        "Orders placed before 14:00 on a business day leave our warehouse the same day.",
        f"Express delivery to {city} arrives one business day sooner and costs 9.90 EUR.",
        "Standard shipping is free for orders above 50 EUR.",
        f"The tracking link from {carrier} is sent by email as soon as the parcel leaves the warehouse.",
        "If the tracking has not moved for 3 business days, the agent opens an investigation with the "
        "carrier and upgrades the shipping at no cost.",
        "A delivery address can be changed until the parcel has shipped; after that the carrier decides.",
    ]
    if city == "Leeds":
        facts.append("Orders to Leeds ship from our UK hub, so no customs fees apply.")
    return title, KB_GENERAL_PRODUCT, facts


def _kb_returns(rng: random.Random) -> tuple[str, str, list[str]]:
    product = rng.choice(PRODUCTS)
    title = rng.choice(
        ("Returning {a_product}", "Refund after returning {a_product}", "Return window for the {product}")
    ).format(product=product, a_product=_a(product))
    facts = [
        f"{_cap(_a(product))} can be returned within {RETURN_WINDOW_DAYS} days of delivery for a full refund.",
        "Returns are free: the prepaid return label is under Orders in the customer's profile.",
        "Once the warehouse has received the return, the refund reaches the original payment method "
        "within 7 business days.",
        "The item must be unused and in its original packaging, with all labels attached.",
        "Refunds always go back to the original payment method; a bank transfer is only used when the "
        "card has expired.",
        "Exchanges for another size are handled as a return and a new order, so the new item ships at once.",
    ]
    if product == "camping stove":
        facts.append("For safety reasons a camping stove can only be returned if it was never lit.")
    return title, product, facts


def _kb_warranty(rng: random.Random) -> tuple[str, str, list[str]]:
    product = rng.choice(PRODUCTS)
    years = WARRANTY_YEARS[product]
    unit = "year" if years == 1 else "years"
    title = rng.choice(
        ("Warranty for the {product}", "{product}: what the warranty covers", "Warranty claims: {product}")
    ).format(product=product)
    title = _cap(title)
    has = "have" if product in PLURAL_PRODUCTS else "has"
    facts = [
        f"The {product} {has} a warranty of {years} {unit} from the delivery date.",
        f"The warranty covers {WARRANTY_COVERS[product]}.",
        f"It does not cover {WARRANTY_EXCLUDES[product]}.",
        "A warranty claim needs the order number and a photo of the fault.",
        "Within the warranty period we repair the item or, if a repair is not possible, replace it free of charge.",
        "A repaired or replaced item keeps the remaining warranty of the original purchase.",
        f"After {years} {unit} we still offer repairs at cost through the repair service.",
    ]
    return title, product, facts


def _kb_security(rng: random.Random) -> tuple[str, str, list[str]]:
    title = rng.choice(
        ("Account security basics", "Password resets and locked accounts", "Keeping customer accounts safe")
    )
    facts = [
        "Agents never ask a customer for a full card number, a password or a card security code; the last "
        "four digits of the card are enough to find a payment.",
        "A password reset link is valid for 24 hours; the customer can request a new one at any time.",
        "After 5 failed sign-in attempts an account is locked for 15 minutes.",
        "Customers can turn on two-factor authentication with an authenticator app under Security in "
        "their profile.",
        "Error 403 after signing in on the website is caused by an outdated browser cookie; clearing the "
        "cookies for our site fixes it.",
        "If the app crashes at checkout, version 5.2 of the app fixes the problem.",
        "A request to delete an account is completed within 30 days and confirmed by email.",
    ]
    return title, KB_GENERAL_PRODUCT, facts


def _kb_billing(rng: random.Random) -> tuple[str, str, list[str]]:
    title = rng.choice(
        ("Billing and invoices", "Northwind Plus billing cycle", "Duplicate charges and invoices")
    )
    facts = [
        "A card is charged when the order ships, not when it is placed.",
        "A pending authorisation from an order that was changed disappears within 3 business days.",
        "A real duplicate charge is refunded and appears on the statement within 5 business days.",
        "Every invoice, with VAT, can be downloaded under Orders in the customer's profile.",
        "Northwind Plus costs 4.99 EUR a month and is billed on the day of the month the customer signed up.",
        "A cancelled Northwind Plus membership stays active until the end of the current billing cycle.",
        "Business customers add their VAT number under Billing in their profile before ordering; invoices "
        "cannot be reissued with a VAT number afterwards.",
    ]
    return title, KB_GENERAL_PRODUCT, facts


def _kb_escalation(rng: random.Random) -> tuple[str, str, list[str]]:
    title = rng.choice(("When to escalate a ticket", "Escalation rules for tier 1", "Tier 2 escalations"))
    facts = [
        "Tier 1 answers every ticket within 24 hours.",
        "A ticket goes to tier 2 when a refund is above 500 EUR.",
        "A carrier investigation still open after 10 business days goes to tier 2.",
        "Any mention of legal action or a suspected account takeover is escalated to tier 2 at once.",
        "Requests to access or erase personal data go to the privacy team on the same day.",
        "Tier 2 replies within 2 business days.",
        "Agents may offer a voucher of up to 50 EUR as an apology; anything more needs a team lead.",
    ]
    return title, KB_GENERAL_PRODUCT, facts


KB_TOPICS = (_kb_shipping, _kb_returns, _kb_warranty, _kb_security, _kb_billing, _kb_escalation)
KB_TOPIC_WEIGHTS = (3, 3, 3, 1, 1, 1)  # per-city and per-product facts need more articles to be learnt


def _staff_email(first: str, last: str) -> str:
    return f"{first.lower()}.{last.lower()}@support.northwind.example"


def _kb_article(
    rng: random.Random,
    article_id: str,
    updated: datetime,
    staff_phones: dict[str, str],
    planted: Planted,
) -> dict[str, Any]:
    """One help-centre article: 3 to 7 sentences of fixed facts, sometimes with planted PII."""
    topic = rng.choices(KB_TOPICS, weights=KB_TOPIC_WEIGHTS)[0]
    title, product, facts = topic(rng)
    author_first, author_last = rng.choice(STAFF)
    pii: str | None = None
    roll = rng.random()
    if roll < 0.2:
        first, last = rng.choice(STAFF)
        name, email, phone = f"{first} {last}", _staff_email(first, last), staff_phones[f"{first} {last}"]
        pii = f"Questions about this article go to {name} at {email} or {phone}."
        planted.person_name.add(name)
        planted.email.add(email)
        planted.phone.add(phone)
    elif roll < 0.35:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        pii = rng.choice(
            (
                'Example: a ticket signed "Thanks, {name}" asked about exactly this, and the agent '
                "followed these steps.",
                'Example reply: "Dear {name}, we have checked your order and followed the steps above."',
            )
        ).format(name=name)
        planted.person_name.add(name)
    elif roll < 0.45 and topic is _kb_returns:
        iban = iban_de(rng)
        pii = (
            f"Example: the refund for order #{rng.randrange(10000, 99999)} went by bank transfer to IBAN "
            f"{iban} because the customer's card had expired."
        )
        planted.iban.add(iban)
    elif roll < 0.5:
        phone = phone_number(rng)
        pii = f"For urgent cases call the warehouse desk on {phone}."
        planted.phone.add(phone)
    n_facts = min(rng.randint(3, 6 if pii else 7), len(facts))
    chosen = [facts[0], *(facts[i] for i in sorted(rng.sample(range(1, len(facts)), n_facts - 1)))]
    return {
        "article_id": article_id,
        "updated_at": updated.isoformat(timespec="seconds"),
        "author_email": _staff_email(author_first, author_last),
        "author_name": f"{author_first} {author_last}",
        "product": product,
        "title": title,
        "body": " ".join([*chosen, pii] if pii else chosen),
    }


# The kinds of worse draft a QA reviewer rejects, and per intent the text of the intent-specific ones.
REJECTED_KINDS = ("curt", "wrong_policy", "no_apology", "blames_customer", "asks_full_card")
CURT_REPLIES = {
    "charged_twice": "Refund issued for {order}.",
    "refund_request": "Refund approved.",
    "invoice_copy": "Invoice is in your account.",
    "late_delivery": "Carrier says 3 more days.",
    "wrong_address": "Address changed.",
    "damaged_item": "Replacement sent.",
    "password_reset": "New link sent.",
    "delete_account": "Request received.",
    "app_crash": "Update the app.",
    "login_error": "Clear your cookies.",
}
WRONG_POLICY_REPLIES = {
    "charged_twice": "The second charge on order {order} is only a pending authorisation and will disappear "
    "within 30 days, so there is nothing for us to refund.",
    "refund_request": "Refunds for returned items take up to 60 business days, so your refund for order "
    "{order} is not late yet.",
    "invoice_copy": "We do not issue invoices for online orders; your card statement serves as the receipt "
    "for order {order}.",
    "late_delivery": "Deliveries to {city} can take up to 6 weeks, so order {order} is not late yet. Express "
    "shipping can be added for 25 EUR.",
    "wrong_address": "Delivery addresses cannot be changed once an order is placed, so order {order} will go "
    "to the old address.",
    "damaged_item": "Please send the damaged {product} back at your own cost first; we will decide about a "
    "replacement within 60 days.",
    "password_reset": "Reset links are only valid for 10 minutes, so please use the next one straight away.",
    "delete_account": "We cannot delete customer accounts, but you can deactivate yours in your profile.",
    "app_crash": "Please downgrade the app to version 4.0, which is the stable release.",
    "login_error": "Error 403 means your account has been suspended; please open a new account.",
}
BLAMING_REPLIES = {
    "charged_twice": "You should have checked your bank statement properly before writing to us.",
    "refund_request": "Your return was slow because you did not use our return label.",
    "invoice_copy": "The invoice has always been in your account; you just did not look for it.",
    "late_delivery": "You probably entered your address in {city} wrong, so the delay is on your side.",
    "wrong_address": "You typed the address yourself, so any delay with order {order} is your responsibility.",
    "damaged_item": "The {product} was fine when it left us; it must have been handled carelessly at your "
    "address.",
    "password_reset": "You must have typed your email address wrong; the reset emails work for everyone else.",
    "delete_account": "You accepted our terms when you signed up and should have read them first.",
    "app_crash": "Your phone is probably too old; the app works fine for other customers.",
    "login_error": "You are doing something wrong when you sign in; nobody else has this problem.",
}


def _rejected_reply(rng: random.Random, intent: str, slots: dict[str, str]) -> str:
    """A worse draft of the chosen reply: one of REJECTED_KINDS, varied by the seeded stream."""
    kind = rng.choice(REJECTED_KINDS)
    resolution = INTENTS[intent][3].format(**slots)
    apologetic = resolution.startswith(("We are sorry", "Thank you"))
    # The facts of the reply without its opening apology or thanks.
    bare = resolution.split(". ", 1)[1] if apologetic else resolution
    if kind == "no_apology" and not apologetic:
        kind = "curt"
    if kind == "curt":
        return CURT_REPLIES[intent].format(**slots)
    if kind == "wrong_policy":
        return (
            f"Hi {slots['first']}, {WRONG_POLICY_REPLIES[intent].format(**slots)} "
            f"Best regards, {slots['agent']} from Northwind Support"
        )
    if kind == "no_apology":
        return bare
    if kind == "blames_customer":
        return f"{BLAMING_REPLIES[intent].format(**slots)} {bare}"
    return (
        f"Hi {slots['first']}, before we can look into order {slots['order']} we need your full card number, "
        "its expiry date and the security code. Please reply with them in this ticket."
    )


def _reply_review(rng: random.Random, review_id: str, created: datetime, planted: Planted) -> dict[str, Any]:
    """A customer message (planted PII as in tickets), the reply QA preferred and a worse draft."""
    ticket, intent, slots = ticket_parts(rng, review_id, created, planted)
    return {
        "review_id": review_id,
        "created_at": ticket["created_at"],
        "category": ticket["category"],
        "subject": ticket["subject"],
        "body": ticket["body"],
        "chosen_reply": ticket["resolution"],
        "rejected_reply": _rejected_reply(rng, intent, slots),
        "reviewer_name": rng.choice(REVIEWERS),
    }


def _kb_and_reviews(
    seed: int, kb_rows: int, review_rows: int, planted: Planted
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The kb_articles and reply_reviews rows, each from its own seeded stream, with broken rows."""
    kb_rng = random.Random(seed + KB_SEED_OFFSET)
    staff_phones = {f"{first} {last}": phone_number(kb_rng) for first, last in STAFF}
    kb_start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    # Rows whose body is replaced below: their PII never reaches the table, so it is not planted.
    kb_broken: dict[int, str | None] = {23: None, 104: "Draft"}
    kb = []
    for i in range(kb_rows):
        target = Planted() if i in kb_broken else planted
        kb.append(
            _kb_article(kb_rng, f"KB-{1001 + i}", kb_start + timedelta(hours=13 * i), staff_phones, target)
        )
    for i, body in kb_broken.items():
        if i < len(kb):
            kb[i]["body"] = body

    review_rng = random.Random(seed + REVIEW_SEED_OFFSET)
    review_start = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    reviews = [
        _reply_review(review_rng, f"REV-{3001 + i}", review_start + timedelta(hours=3 * i + 1), planted)
        for i in range(review_rows)
    ]
    if len(reviews) > 150:
        reviews[17]["rejected_reply"] = reviews[17]["chosen_reply"]  # no preference to learn
        reviews[88]["rejected_reply"] = None
        reviews[150]["chosen_reply"] = None
    return kb, reviews
