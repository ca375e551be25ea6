"""Users, accounts and merchants of the simulated MercuryPay world (North America, Europe)."""

from __future__ import annotations

import random
from dataclasses import dataclass

# country -> (currency, region, locales)
COUNTRIES = {
    "US": ("USD", "NA", ("en-US", "es-US")), "CA": ("CAD", "NA", ("en-CA", "fr-CA")),
    "MX": ("MXN", "NA", ("es-MX",)), "GB": ("GBP", "EU", ("en-GB",)),
    "DE": ("EUR", "EU", ("de-DE",)), "FR": ("EUR", "EU", ("fr-FR",)),
    "ES": ("EUR", "EU", ("es-ES",)), "IT": ("EUR", "EU", ("it-IT",)),
    "NL": ("EUR", "EU", ("nl-NL", "en-NL")), "IE": ("EUR", "EU", ("en-IE",)),
    "SE": ("SEK", "EU", ("sv-SE",)), "PL": ("PLN", "EU", ("pl-PL",)),
    "CH": ("CHF", "EU", ("de-CH", "fr-CH")),
}
# Where users live: the US and Europe's large markets dominate.
USER_COUNTRY_WEIGHTS = {"US": 40, "CA": 6, "MX": 5, "GB": 10, "DE": 10, "FR": 8, "ES": 6,
                        "IT": 5, "NL": 3, "IE": 2, "SE": 2, "PL": 2, "CH": 1}

# mcc -> (category, typical amount low, high in major units of a USD-like currency)
MCCS = {
    "5411": ("grocery", 8, 180), "5812": ("restaurants", 12, 140), "5814": ("fast_food", 4, 30),
    "4121": ("rideshare", 6, 60), "5541": ("fuel", 20, 110), "5999": ("retail_misc", 5, 200),
    "5732": ("electronics", 25, 1800), "4511": ("airlines", 80, 1400),
    "7011": ("hotels", 90, 900), "5912": ("pharmacy", 5, 90), "4899": ("subscriptions", 5, 25),
    "5311": ("department_stores", 15, 400), "5691": ("clothing", 15, 300),
    "7832": ("entertainment", 8, 45), "4814": ("telecom", 15, 120), "6011": ("cash", 20, 400),
}
# Rough purchasing-power scaling of amounts per currency.
CURRENCY_SCALE = {"USD": 1.0, "CAD": 1.35, "MXN": 17.0, "GBP": 0.8, "EUR": 0.92, "SEK": 10.5,
                  "PLN": 4.0, "CHF": 0.88}

FIRST_NAMES = ("Ana", "Ben", "Chloe", "Diego", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jonas",
               "Kira", "Luca", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara",
               "Uma", "Victor", "Wiebke", "Xavier", "Yara", "Zoe")
LAST_NAMES = ("Smith", "Garcia", "Müller", "Martin", "Rossi", "de Vries", "Kowalski", "Nilsson",
              "Dubois", "Brown", "Lopez", "Schmidt", "Bianchi", "Murphy", "Jansen", "Novak")
MERCHANT_WORDS = ("Blue", "North", "Corner", "Urban", "Prime", "Golden", "Metro", "Green",
                  "Harbor", "Summit", "Maple", "Alpine", "River", "Sun", "Oak", "Nova")
MERCHANT_KINDS = {"grocery": "Market", "restaurants": "Bistro", "fast_food": "Burger",
                  "rideshare": "Rides", "fuel": "Fuel", "retail_misc": "Store",
                  "electronics": "Electronics", "airlines": "Air", "hotels": "Hotel",
                  "pharmacy": "Pharmacy", "subscriptions": "Stream", "department_stores": "Gallery",
                  "clothing": "Outfitters", "entertainment": "Cinema", "telecom": "Mobile",
                  "cash": "ATM"}


@dataclass(frozen=True)
class User:
    user_id: str
    accounts: tuple[str, ...]
    country: str
    currency: str
    locale: str
    full_name: str
    email: str
    risk_tier: str
    kyc_status: str
    card_last4: str
    activity_weight: float


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    mcc: str
    category: str
    country: str
    currency: str
    amount_low: float
    amount_high: float


# A cardholder pays mostly at home, in the home currency; the rest is travel and shopping
# abroad (other countries' merchants, their currencies).
HOME_SHARE = 0.88


@dataclass(frozen=True)
class World:
    users: tuple[User, ...]
    merchants: tuple[Merchant, ...]
    user_weights: tuple[float, ...]  # cumulative, for rng.choices(cum_weights=...)
    merchants_by_country: dict[str, tuple[Merchant, ...]]

    def merchants_for(self, user: User, abroad: bool) -> tuple[Merchant, ...]:
        """Where ``user`` may pay: at home, or anywhere when ``abroad`` (or when the world has
        no merchant in the user's country)."""
        home = self.merchants_by_country.get(user.country)
        return self.merchants if abroad or not home else home


def _hex_id(rng: random.Random, prefix: str, bits: int = 64) -> str:
    return f"{prefix}_{rng.getrandbits(bits):016x}"


def build_world(rng: random.Random, n_users: int, n_merchants: int) -> World:
    countries = list(USER_COUNTRY_WEIGHTS)
    weights = list(USER_COUNTRY_WEIGHTS.values())
    users = []
    for _ in range(n_users):
        country = rng.choices(countries, weights)[0]
        currency, _, locales = COUNTRIES[country]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        user_id = _hex_id(rng, "usr")
        n_accounts = 1 if rng.random() < 0.8 else 2
        users.append(User(
            user_id=user_id,
            accounts=tuple(_hex_id(rng, "acc") for _ in range(n_accounts)),
            country=country, currency=currency, locale=rng.choice(locales),
            full_name=f"{first} {last}",
            email=f"{first.lower()}.{user_id[-6:]}@example.com",
            risk_tier=rng.choices(("LOW", "MEDIUM", "HIGH"), (80, 16, 4))[0],
            kyc_status=rng.choices(("VERIFIED", "PENDING", "EXPIRED"), (92, 6, 2))[0],
            card_last4=f"{rng.randrange(10_000):04d}",
            # Heavy-tailed activity: a few users make most of the traffic, as in real apps.
            activity_weight=rng.paretovariate(1.3),
        ))
    merchants = []
    mccs = list(MCCS)
    for _ in range(n_merchants):
        mcc = rng.choice(mccs)
        category, low, high = MCCS[mcc]
        country = rng.choices(countries, weights)[0]
        currency = COUNTRIES[country][0]
        scale = CURRENCY_SCALE[currency]
        words = f"{rng.choice(MERCHANT_WORDS)} {rng.choice(MERCHANT_WORDS)}"
        name = f"{words} {MERCHANT_KINDS[category]}"
        merchants.append(Merchant(_hex_id(rng, "mch", 48), name, mcc, category, country,
                                  currency, low * scale, high * scale))
    cumulative, total = [], 0.0
    for user in users:
        total += user.activity_weight
        cumulative.append(total)
    by_country: dict[str, list[Merchant]] = {}
    for merchant in merchants:
        by_country.setdefault(merchant.country, []).append(merchant)
    return World(tuple(users), tuple(merchants), tuple(cumulative),
                 {country: tuple(found) for country, found in by_country.items()})
