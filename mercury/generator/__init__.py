"""A deterministic MercuryPay world and its traffic, with the anomalies real streams have.

``knobs`` holds the settings, ``world`` the users and merchants, ``documents`` the knowledge
base, ``traffic`` the simulation that emits events in arrival order, ``anomalies`` what is done
to records on the way (duplicates, lateness, schema drift, corruption), ``manifest`` the
account of every anomaly injected, ``profiles_pg`` the Postgres profile tables CDC reads.
"""
