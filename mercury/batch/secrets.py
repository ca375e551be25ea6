"""The job side of ``spark_submit.secrets``: a Spark entry point's secrets, fetched at start.

A job run carries references only (the settings file names each secret; no value is in its
arguments or Spark conf, which anyone allowed to list job runs can read). ``into_environment``
runs on the driver before anything connects: it reads each secret from Secrets Manager as the
job role (Terraform grants it exactly these) and sets the variable the settings name, so
``online_store.password_env`` and the like resolve as they do in a pod.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from mercury.config import ConfigError

if TYPE_CHECKING:
    from mercury.config import Settings


def into_environment(settings: Settings, *, client: Any = None,
                     environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Fetch ``spark_submit.secrets`` into ``environ``; the variables set, in order. Nothing
    to do on the local binding (its secrets, if any, are the caller's environment)."""
    submit = settings.spark_submit
    if submit.type != "emr_serverless" or not submit.secrets:
        return []
    if client is None:
        import boto3

        client = boto3.client("secretsmanager", region_name=submit.region)
    from botocore.exceptions import ClientError

    for variable, secret_id in submit.secrets.items():
        try:
            value = client.get_secret_value(SecretId=secret_id).get("SecretString")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise ConfigError(f"spark_submit.secrets.{variable}: cannot read secret "
                              f"{secret_id!r} ({code}); the job role must be granted it "
                              "(infra/terraform modules/emr_serverless secret_arns)") from exc
        if not value:
            raise ConfigError(f"spark_submit.secrets.{variable}: secret {secret_id!r} has no "
                              "string value")
        environ[variable] = value
    return list(submit.secrets)
