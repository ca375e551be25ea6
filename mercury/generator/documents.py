"""Knowledge documents: card policies and merchant help pages, in several languages.

Bodies are markdown-like text with headings and paragraphs so that chunking has structure to
respect. Policies explain every decline reason, since "why was my card declined?" is answered
from them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mercury.generator.world import Merchant

LANGUAGES = ("en", "fr", "de", "es")
LANGUAGE_OF_COUNTRY = {"US": "en", "CA": "en", "GB": "en", "IE": "en", "MX": "es", "ES": "es",
                       "FR": "fr", "DE": "de", "CH": "de", "IT": "en", "NL": "en", "SE": "en",
                       "PL": "en"}

POLICY_TOPICS = {
    "declines": {
        "en": ("Why was my card declined?", "A payment can be declined for several reasons."),
        "fr": ("Pourquoi ma carte a-t-elle été refusée ?",
               "Un paiement peut être refusé pour plusieurs raisons."),
        "de": ("Warum wurde meine Karte abgelehnt?",
               "Eine Zahlung kann aus mehreren Gründen abgelehnt werden."),
        "es": ("¿Por qué se rechazó mi tarjeta?", "Un pago puede rechazarse por varios motivos."),
    },
    "disputes": {
        "en": ("Disputes and chargebacks", "You can dispute a charge you do not recognise."),
        "fr": ("Litiges et rétrofacturations", "Vous pouvez contester un paiement inconnu."),
        "de": ("Reklamationen und Rückbuchungen",
               "Sie können eine unbekannte Zahlung beanstanden."),
        "es": ("Disputas y contracargos", "Puede disputar un cargo que no reconoce."),
    },
    "foreign_fees": {
        "en": ("Foreign transaction fees", "Payments in another currency are converted daily."),
        "fr": ("Frais à l'étranger", "Les paiements en devise étrangère sont convertis."),
        "de": ("Auslandsgebühren", "Zahlungen in Fremdwährung werden umgerechnet."),
        "es": ("Comisiones en el extranjero", "Los pagos en otra moneda se convierten."),
    },
    "card_freeze": {
        "en": ("Freezing your card", "Freeze your card in the app if you misplace it."),
        "fr": ("Bloquer votre carte", "Bloquez votre carte dans l'application si vous la perdez."),
        "de": ("Karte sperren", "Sperren Sie Ihre Karte in der App, wenn Sie sie verlieren."),
        "es": ("Congelar su tarjeta", "Congele su tarjeta en la aplicación si la pierde."),
    },
    "installments": {
        "en": ("Installment plans", "Split eligible purchases into monthly installments."),
        "fr": ("Paiement en plusieurs fois", "Payez vos achats éligibles en mensualités."),
        "de": ("Ratenzahlung", "Teilen Sie berechtigte Einkäufe in Monatsraten auf."),
        "es": ("Planes a plazos", "Divida las compras elegibles en cuotas mensuales."),
    },
}

DECLINE_EXPLANATIONS = {
    "INSUFFICIENT_FUNDS": "The available balance was lower than the amount.",
    "SUSPECTED_FRAUD": "Our fraud checks paused the payment to protect you.",
    "CARD_FROZEN": "The card was frozen in the app when the payment was tried.",
    "EXPIRED_CARD": "The card had passed its expiry date.",
    "INCORRECT_PIN": "The PIN entered did not match.",
    "LIMIT_EXCEEDED": "The payment would exceed your daily or monthly limit.",
    "MERCHANT_BLOCKED": "Payments to this merchant are blocked on your card.",
    "COUNTRY_BLOCKED": "Payments from this country are turned off in your settings.",
}

FILLER = ("Contact support from the app at any time.",
          "Changes take effect immediately and apply to all your cards.",
          "You will get a notification for every step of the process.",
          "Keep your app up to date to see the latest options.",
          "Fees, if any, are shown before you confirm.")


@dataclass(frozen=True)
class DocumentSpec:
    doc_id: str
    doc_type: str
    language: str
    source_url: str
    title: str
    merchant_id: str | None
    sections: tuple[tuple[str, str], ...]  # (heading, paragraph)


def render(spec: DocumentSpec, revision: int) -> str:
    parts = [f"# {spec.title}"]
    for heading, paragraph in spec.sections:
        parts.append(f"## {heading}\n\n{paragraph}")
    if revision:
        parts.append(f"## Updates\n\nRevision {revision}: wording and limits reviewed.")
    return "\n\n".join(parts)


def build_documents(rng: random.Random, merchants: tuple[Merchant, ...], count: int
                    ) -> list[DocumentSpec]:
    docs: list[DocumentSpec] = []
    for topic, by_language in POLICY_TOPICS.items():
        for language in LANGUAGES:
            title, intro = by_language[language]
            sections = [("Overview", intro)]
            if topic == "declines":
                sections += [(reason.replace("_", " ").title(), text)
                             for reason, text in DECLINE_EXPLANATIONS.items()]
            sections += [("More help", " ".join(rng.sample(FILLER, 2)))]
            docs.append(DocumentSpec(
                doc_id=f"policy-{topic}-{language}", doc_type="CARD_POLICY", language=language,
                source_url=f"https://help.mercurypay.example/{language}/policies/{topic}",
                title=title, merchant_id=None, sections=tuple(sections)))
    for merchant in merchants[: max(0, count - len(docs))]:
        language = LANGUAGE_OF_COUNTRY.get(merchant.country, "en")
        merchant_sections = (
            ("About", f"{merchant.name} is a {merchant.category.replace('_', ' ')} merchant "
                      f"in {merchant.country} (MCC {merchant.mcc})."),
            ("Payments", f"Charges appear as {merchant.name.upper()[:22]} and settle within "
                         f"{rng.choice((1, 2, 3))} business days."),
            ("Refunds", " ".join(rng.sample(FILLER, 2))),
        )
        docs.append(DocumentSpec(
            doc_id=f"merchant-{merchant.merchant_id}", doc_type="MERCHANT_HELP",
            language=language,
            source_url=f"https://help.mercurypay.example/{language}/merchants/"
                       f"{merchant.merchant_id}",
            title=f"{merchant.name}: payments and refunds", merchant_id=merchant.merchant_id,
            sections=merchant_sections))
    return docs[:count] if count < len(docs) else docs
