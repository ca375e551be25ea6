"""FlinkRestHook: the Flink REST API behind an Airflow connection.

The connection (``flink_default`` unless told otherwise) is only an address: scheme, host and
port of the JobManager's REST endpoint, e.g. ``AIRFLOW_CONN_FLINK_DEFAULT=http://127.0.0.1:8081``.
Every call is delegated to ``mercury.ops.flink_rest.FlinkRestClient``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from mercury.ops.flink_rest import FlinkRestClient


class FlinkRestHook(BaseHook):
    conn_name_attr = "flink_conn_id"
    default_conn_name = "flink_default"
    conn_type = "http"
    hook_name = "Flink REST"

    def __init__(self, flink_conn_id: str = default_conn_name, timeout_s: float = 30.0):
        super().__init__()
        self.flink_conn_id = flink_conn_id
        self.timeout_s = timeout_s
        self._client: FlinkRestClient | None = None

    def base_url(self) -> str:
        conn = self.get_connection(self.flink_conn_id)
        if not conn.host:
            raise ValueError(f"connection {self.flink_conn_id!r} has no host")
        # An URI connection ("http://host:port") leaves the scheme in conn_type; a form-made
        # HTTP connection may carry it in `schema` instead.
        scheme = conn.schema or ("https" if conn.conn_type == "https" else "http")
        host = conn.host if "://" not in conn.host else conn.host.split("://", 1)[1]
        port = f":{conn.port}" if conn.port else ""
        return f"{scheme}://{host}{port}"

    def get_conn(self) -> FlinkRestClient:
        from mercury.ops.flink_rest import FlinkRestClient

        if self._client is None:
            self._client = FlinkRestClient(self.base_url(), timeout_s=self.timeout_s)
        return self._client
