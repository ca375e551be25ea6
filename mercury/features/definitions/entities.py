"""The things features are about."""

from mercury.features.definition.dsl import Entity

user = Entity("user", join_key="user_id", tag="u", description="A MercuryPay customer.")
account = Entity("account", join_key="account_id", tag="a", description="A card account.")
merchant = Entity("merchant", join_key="merchant_id", tag="m", description="A card acceptor.")
