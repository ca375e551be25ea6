"""infra/terraform is well-formed, consistent with the repository, and passes checkov.

No ``terraform`` runs here (it is not installed and its providers cannot be downloaded), so
``plan``/``apply`` are unproven; what is checked instead:

- every ``.tf`` and ``.tfvars`` file parses (python-hcl2);
- in every directory, each ``var.X`` used is declared and each declared variable is used;
- each module call passes only variables the module declares and every one it requires, and
  each ``module.M.O`` used names a module called there and an output that module defines;
- each region's tfvars sets only declared variables, every required one, and three distinct
  AZ IDs of its own region;
- the topic list (``modules/kafka_topics/topics.json``) is what the stream registry renders,
  the Glue databases cover every lake namespace the code writes, and the Snowflake masking
  policy covers exactly the personal fields of the audit tables' contracts;
- ``checkov`` (its own env, infra/envs/checkov) finds nothing, and every skip says why.

The checkov run takes ~10-25 s on this 2-core machine; a passing result is cached in
``.local/cache/checkov`` under a hash of every file in infra/terraform and checkov's lock, so
reruns without a change cost nothing. A failure is never cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hcl2
import pytest

from mercury.config import load_settings
from mercury.contracts import kafka_topics, registry, schemas
from mercury.contracts.avro_walk import iter_fields

REPO = Path(__file__).resolve().parents[1]
TERRAFORM = REPO / "infra" / "terraform"
PROD = TERRAFORM / "envs" / "prod"
CHECKOV_ENV = REPO / "infra" / "envs" / "checkov"
CHECKOV = CHECKOV_ENV / ".venv" / "bin" / "checkov"
CACHE = REPO / ".local" / "cache" / "checkov"
# `terraform validate` needs provider schemas; the registry is out of reach here, but this
# machine has the AWS provider in a filesystem mirror (and nothing else).
PROVIDER_MIRROR = Path(os.environ.get("MERCURY_TF_PROVIDER_MIRROR", "/opt/tf-plugins"))
VALIDATE_CACHE = REPO / ".local" / "cache" / "terraform-validate"
# Module-call arguments that are Terraform's, not the module's variables.
META_ARGUMENTS = {"source", "version", "providers", "depends_on", "count", "for_each"}
VAR_REF = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
MODULE_REF = re.compile(r"(?<![\w.])module\.([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)")
REGION_AZ_PREFIX = {"eu-west-1": "euw1-az", "us-east-1": "use1-az"}
# Required variables given at apply time, never in the repository (README: Plan and apply).
APPLY_TIME_VARIABLES = {"private_ca_arn"}


def unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


@functools.cache
def parse(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        parsed: dict[str, Any] = hcl2.load(handle)
    return parsed


def tf_dirs() -> list[Path]:
    return sorted({path.parent for path in TERRAFORM.rglob("*.tf")})


def strings(node: Any) -> Iterator[str]:
    """Every expression and string of a parsed file; comments left out (they may name vars)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if not key.startswith("__"):
                yield key
                yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def blocks(parsed: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """Labelled blocks (variable, output, module) of a parsed file: label -> body."""
    found: dict[str, dict[str, Any]] = {}
    for entry in parsed.get(kind, []):
        for label, body in entry.items():
            found[unquote(label)] = body
    return found


class TfDir:
    """One Terraform directory (a module or the environment) read as a whole."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files = {p.name: parse(p) for p in sorted(path.glob("*.tf"))}
        self.variables: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.modules: dict[str, dict[str, Any]] = {}
        for parsed in self.files.values():
            self.variables |= blocks(parsed, "variable")
            self.outputs |= blocks(parsed, "output")
            self.modules |= blocks(parsed, "module")

    def texts(self) -> Iterator[str]:
        for parsed in self.files.values():
            yield from strings(parsed)

    def var_refs(self) -> set[str]:
        return {m for text in self.texts() for m in VAR_REF.findall(text)}

    def module_refs(self) -> set[tuple[str, str]]:
        return {m for text in self.texts() for m in MODULE_REF.findall(text)}

    def required_variables(self) -> set[str]:
        return {name for name, body in self.variables.items() if "default" not in body}

    def child(self, module: str) -> TfDir:
        return tf_dir((self.path / unquote(self.modules[module]["source"])).resolve())


@functools.cache
def tf_dir(path: Path) -> TfDir:
    return TfDir(path)


def tfvars_files() -> list[Path]:
    return sorted(PROD.glob("*.tfvars"))


def test_every_terraform_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf")) + tfvars_files()
    assert len(files) >= 30, "the modules and the prod environment are missing"
    for path in files:
        try:
            parsed = parse(path)
        except Exception as error:  # the parser's own errors: name the file
            pytest.fail(f"{path.relative_to(REPO)} does not parse: {error}")
        assert parsed, f"{path.relative_to(REPO)} is empty"


@pytest.mark.parametrize("directory", tf_dirs(), ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_variables_used_are_declared_and_declared_ones_used(directory: Path) -> None:
    tf = tf_dir(directory)
    used, declared = tf.var_refs(), set(tf.variables)
    where = directory.relative_to(REPO)
    assert not used - declared, f"{where}: used but not declared: {sorted(used - declared)}"
    assert not declared - used, f"{where}: declared but never used: {sorted(declared - used)}"


@pytest.mark.parametrize("directory", [d for d in tf_dirs() if tf_dir(d).modules],
                         ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_module_calls_match_the_modules(directory: Path) -> None:
    tf = tf_dir(directory)
    for name, body in tf.modules.items():
        child = tf.child(name)
        assert child.files, f"module {name}: source {body['source']} has no .tf files"
        passed = {key for key in body if not key.startswith("__")} - META_ARGUMENTS
        assert not passed - set(child.variables), (
            f"module {name} passes undeclared variables {sorted(passed - set(child.variables))}")
        missing = child.required_variables() - passed
        assert not missing, f"module {name} misses required variables {sorted(missing)}"
    for module, output in tf.module_refs():
        assert module in tf.modules, f"module.{module}.{output}: no module {module!r} here"
        assert output in tf.child(module).outputs, (
            f"module.{module}.{output}: {tf.modules[module]['source']} has no output {output!r}")


@pytest.mark.parametrize("tfvars", tfvars_files(), ids=lambda p: p.name)
def test_region_tfvars(tfvars: Path) -> None:
    env = tf_dir(PROD)
    values = {k: v for k, v in parse(tfvars).items() if not k.startswith("__")}
    assert not set(values) - set(env.variables), (
        f"{tfvars.name} sets undeclared variables {sorted(set(values) - set(env.variables))}")
    missing = env.required_variables() - set(values) - APPLY_TIME_VARIABLES
    assert not missing, f"{tfvars.name} misses {sorted(missing)}"
    assert not APPLY_TIME_VARIABLES & set(values), f"{tfvars.name} sets an apply-time value"
    region = unquote(values["region"])
    assert tfvars.stem == region, f"{tfvars.name} deploys {region}"
    azs = [unquote(a) for a in values["az_ids"]]
    assert len(set(azs)) == 3, f"{tfvars.name}: az_ids must be three distinct zones, got {azs}"
    assert all(a.startswith(REGION_AZ_PREFIX[region]) for a in azs), (
        f"{tfvars.name}: az_ids {azs} are not zones of {region}")


def test_both_regions_are_described() -> None:
    assert {p.stem for p in tfvars_files()} == {"eu-west-1", "us-east-1"}
    assert {p.name for p in PROD.glob("backend-*.hcl")} == {
        "backend-eu-west-1.hcl", "backend-us-east-1.hcl"}


def test_topics_are_the_registry() -> None:
    assert kafka_topics.check() == []
    topics = json.loads(kafka_topics.TOPICS_FILE.read_text())["topics"]
    assert set(topics) == {s.name for s in registry.STREAMS}
    for stream in registry.STREAMS:
        topic = topics[stream.name]
        assert topic["partitions"] == stream.partitions, stream.name
        assert topic["replication_factor"] == 3
        config = topic["config"]
        assert int(config["retention.ms"]) == stream.retention_hours * 3_600_000, stream.name
        assert config["min.insync.replicas"] == "2"
        # Kafka cannot tier compacted topics; everything else keeps only a day on the brokers.
        if stream.compacted:
            assert config["cleanup.policy"] == "compact,delete"
            assert "remote.storage.enable" not in config
        else:
            assert config["cleanup.policy"] == "delete"
            assert config["remote.storage.enable"] == "true"
            assert int(config["local.retention.ms"]) <= int(config["retention.ms"])
    # The Terraform module creates exactly the file's topics.
    module = tf_dir(TERRAFORM / "modules" / "kafka_topics")
    assert any("topics.json" in text for text in module.texts())


def test_a_stale_topic_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = json.loads(kafka_topics.rendered_text())
    stale["topics"]["transactions"]["partitions"] = 12
    path = tmp_path / "topics.json"
    path.write_text(json.dumps(stale, indent=2, sort_keys=True) + "\n")
    monkeypatch.setattr(kafka_topics, "TOPICS_FILE", path)
    assert kafka_topics.check() == [
        f"{path} differs from the stream registry: run python -m mercury.contracts.kafka_topics "
        "--write"]
    assert kafka_topics.main(["--write"]) == 0
    assert kafka_topics.check() == []


def glue_databases() -> set[str]:
    env = tf_dir(PROD)
    return set(env.modules["glue"]["databases"])


def test_glue_databases_cover_every_lake_namespace() -> None:
    written = {s.lake_table.split(".")[0] for s in registry.STREAMS if s.lake_table}
    written |= {"quality", "compliance"}  # quality.late_events, compliance.erasure_evidence
    written.add(load_settings().offline.namespace)  # the feature history
    assert written <= glue_databases(), f"no Glue database for {sorted(written - glue_databases())}"


def test_masked_columns_are_the_audit_tables_personal_fields() -> None:
    expected: dict[str, list[str]] = {}
    for stream in registry.STREAMS:
        if not stream.lake_table or not stream.lake_table.startswith("audit."):
            continue
        schema = schemas.load(stream.schema_subject).schema
        personal = sorted(path for path, field in iter_fields(schema)
                          if field.get("data_class") == "personal" and "." not in path)
        if personal:
            expected[stream.lake_table.upper()] = personal
    masked = tf_dir(PROD).modules["snowflake"]["masked_columns"]
    actual = {unquote(table): sorted(unquote(c) for c in columns)
              for table, columns in masked.items() if not table.startswith("__")}
    assert actual == expected


def terraform_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in TERRAFORM.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(TERRAFORM)).encode())
        digest.update(path.read_bytes())
    digest.update((CHECKOV_ENV / "uv.lock").read_bytes())
    return digest.hexdigest()


def test_every_checkov_skip_says_why() -> None:
    skips = [(path, line) for path in TERRAFORM.rglob("*.tf")
             for line in path.read_text().splitlines() if "checkov:skip=" in line]
    assert skips, "expected the justified skips (access-log bucket, secrets rotation...)"
    for path, line in skips:
        match = re.search(r"checkov:skip=(CKV2?_\w+):(.+)", line)
        assert match and len(match.group(2).strip()) >= 30, (
            f"{path.relative_to(REPO)}: a skip needs its check id and a reason: {line.strip()}")


def test_checkov_is_clean() -> None:
    if not CHECKOV.exists():
        pytest.fail("checkov is not installed: run `make setup` (infra/envs/checkov)")
    marker = CACHE / f"{terraform_digest()}.pass"
    if marker.exists():
        return
    done = subprocess.run(
        [str(CHECKOV), "-d", str(TERRAFORM), "--framework", "terraform", "secrets",
         "--skip-download", "--compact", "-o", "json"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
              for report in reports for c in report["results"]["failed_checks"]]
    assert not failed, "checkov:\n" + "\n".join(failed)
    terraform = next(r for r in reports if r["check_type"] == "terraform")
    assert terraform["summary"]["passed"] > 200, "checkov scanned less than the whole tree"
    assert done.returncode == 0, done.stderr[-2000:]
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(terraform["summary"]))


def resources(tf: TfDir, kind: str) -> dict[str, dict[str, Any]]:
    """The resources of one type in a directory: name -> body."""
    found: dict[str, dict[str, Any]] = {}
    for parsed in tf.files.values():
        for entry in parsed.get("resource", []):
            for resource_type, named in entry.items():
                if unquote(resource_type) == kind:
                    found |= {unquote(label): body for label, body in named.items()}
    return found


def interpolate(expression: str, variables: dict[str, str]) -> str:
    """A string expression with its ``${var.X}`` replaced (all this test needs)."""
    return re.sub(r"\$\{var\.(\w+)\}", lambda m: variables[m.group(1)], unquote(expression))


def region_values(region: str) -> dict[str, str]:
    return {k: unquote(v) for k, v in parse(PROD / f"{region}.tfvars").items()
            if isinstance(v, str) and not k.startswith("__")}


def secret_names(refs: list[str], region: str) -> set[str]:
    """The names of the secrets ``module.M.O`` ARNs (outputs of a secret's arn) point at."""
    env, tfvars, names = tf_dir(PROD), region_values(region), set()
    for ref in refs:
        module, output = MODULE_REF.search(ref).groups()  # type: ignore[union-attr]
        child = env.child(module)
        value = unquote(child.outputs[output]["value"])
        secret = re.fullmatch(r"\$\{aws_secretsmanager_secret\.(\w+)\.arn\}", value)
        assert secret, f"module.{module}.{output} is not a secret's ARN: {value}"
        name = resources(child, "aws_secretsmanager_secret")[secret.group(1)]["name"]
        names.add(interpolate(name, {"name": interpolate(env.modules[module]["name"], tfvars)}))
    return names


def test_the_spark_jobs_secrets_are_the_ones_the_job_role_may_read() -> None:
    """config/production.yaml (eu-west-1) names each secret a job run fetches; Terraform grants
    the EMR job role exactly those (a name the role cannot read fails the job at start)."""
    submit = load_settings("production").spark_submit
    assert submit.type == "emr_serverless" and submit.region == "eu-west-1"
    emr = tf_dir(PROD).modules["emr_serverless"]
    assert secret_names(emr["secret_arns"], "eu-west-1") == set(submit.secrets.values())
    policy = "".join(tf_dir(TERRAFORM / "modules" / "emr_serverless").texts())
    assert "secretsmanager:GetSecretValue" in policy and "var.secret_arns" in policy


def test_postgres_is_the_profiles_source_and_the_ops_state_store() -> None:
    """Aurora: logical replication on (the CDC slot), encrypted with its key, Multi-AZ, in the
    private subnets, and one rotated secret per role that config/production.yaml logs in as,
    in the database it names."""
    module = tf_dir(TERRAFORM / "modules" / "postgres")
    call = tf_dir(PROD).modules["postgres"]
    parameters = {unquote(p["name"]): unquote(str(p["value"])) for p in resources(
        module, "aws_rds_cluster_parameter_group")["this"]["parameter"]}
    assert parameters["rds.logical_replication"] == "1"
    assert parameters["rds.force_ssl"] == "1"
    cluster = resources(module, "aws_rds_cluster")["this"]
    assert cluster["storage_encrypted"] is True and cluster["kms_key_id"] == "${var.kms_key_arn}"
    assert cluster["manage_master_user_password"] is True  # RDS rotates the master's
    assert call["subnet_ids"] == "${module.network.private_subnet_ids}"
    assert call["kms_key_arn"] == '${module.kms.key_arns["databases"]}'
    instances = resources(module, "aws_rds_cluster_instance")["this"]
    assert "count.index % length(var.availability_zones)" in instances["availability_zone"]
    assert "var.instance_count >= 2" in module.variables["instance_count"]["validation"][0][
        "condition"]
    assert instances["publicly_accessible"] is False
    roles = module.files["main.tf"]["locals"][0]["service_roles"]
    settings = load_settings("production")
    logins = {settings.postgres.user: settings.postgres.database}
    for database in (settings.privacy.user_keys_postgres, settings.ops_state.postgres):
        assert database is not None
        logins[database.user] = database.database
    assert {role: unquote(spec["database"]) for role, spec in roles.items()} == logins
    for kind in ("aws_secretsmanager_secret", "aws_secretsmanager_secret_rotation"):
        assert resources(module, kind)["service"]["for_each"] == "${local.service_roles}"


def test_the_schema_registry_is_the_one_production_names() -> None:
    env = tf_dir(PROD)
    zone = unquote(env.modules["network"]["internal_zone_name"])
    module = tf_dir(TERRAFORM / "modules" / "schema_registry")
    record = resources(module, "aws_route53_record")["this"]
    host = interpolate(record["name"], {"zone_name": zone})
    assert load_settings("production").event_log.schema_registry_url == f"https://{host}"
    certificate = resources(env, "aws_acm_certificate")["schema_registry"]
    assert unquote(certificate["domain_name"]) == host
    assert "aws_route53_record.this.fqdn" in unquote(module.outputs["url"]["value"])
    deployment = resources(module, "kubernetes_deployment_v1")["this"]["spec"][0]
    assert deployment["replicas"] == 3
    spread = deployment["template"][0]["spec"][0]["topology_spread_constraint"][0]
    assert unquote(spread["topology_key"]) == "topology.kubernetes.io/zone"
    topic = resources(module, "kafka_topic")["schemas"]
    assert topic["partitions"] == 1 and topic["replication_factor"] == 3
    assert unquote(topic["config"]['"cleanup.policy"']) == "compact"  # hcl2 keeps the quotes


def test_production_monitoring_loads_the_files_the_local_stack_runs() -> None:
    """The managed Prometheus gets every rules file of infra/monitoring (the folder the local
    Prometheus reads), the Alertmanager its routing, Grafana its dashboards; the scraper keeps
    the local job names the rules select on."""
    from mercury.stack import monitoring_servers

    call = tf_dir(PROD).modules["monitoring"]
    folder = (PROD / unquote(call["monitoring_dir"]).replace("${path.root}/", "")).resolve()
    assert folder == monitoring_servers.MONITORING_DIR
    rule_files = sorted(p.name for p in (folder / "rules").glob("*.yml"))
    assert rule_files, "no rules to load"
    for name in rule_files:  # AMP namespace names
        assert re.fullmatch(r"[0-9A-Za-z][-.0-9A-Za-z_]{0,63}", name.removesuffix(".yml")), name
    module = tf_dir(TERRAFORM / "modules" / "monitoring")
    text = "\n".join(module.texts())
    assert 'fileset("${var.monitoring_dir}/rules", "*.yml")' in text
    assert 'file("${var.monitoring_dir}/alertmanager.yml")' in text
    assert 'fileset("${var.monitoring_dir}/dashboards", "*.json")' in text
    namespaces = resources(module, "aws_prometheus_rule_group_namespace")["this"]
    assert namespaces["for_each"] == "${local.rule_files}"
    assert "file(\"${var.monitoring_dir}/rules/${each.value}\")" in namespaces["data"]
    assert list((folder / "dashboards").glob("*.json")), "no dashboards to load"


def aws_only_modules() -> list[Path]:
    """Modules whose every resource and data source is the AWS provider's."""
    found = []
    for path in sorted((TERRAFORM / "modules").iterdir()):
        kinds = {unquote(kind) for parsed in tf_dir(path).files.values()
                 for section in ("resource", "data") for entry in parsed.get(section, [])
                 for kind in entry}
        if kinds and all(kind.startswith("aws_") for kind in kinds):
            found.append(path)
    return found


def validation_root(root: Path, modules: list[Path]) -> None:
    """One root calling every module with each variable as a root variable of its own:
    `terraform validate` takes root variables as unknown, so every module is checked
    against the provider's schema in one run (one schema load, ~25 s here)."""
    lines = []
    for module in modules:
        shutil.copytree(module, root / "modules" / module.name)
        arguments = []
        for variable in tf_dir(module).variables:
            lines.append(f'variable "{module.name}__{variable}" {{}}')
            arguments.append(f"  {variable} = var.{module.name}__{variable}")
        lines += [f'module "{module.name}" {{', f'  source = "./modules/{module.name}"',
                  *arguments, "}"]
    (root / "main.tf").write_text("\n".join(lines) + "\n")


def test_the_aws_modules_pass_terraform_validate(tmp_path: Path) -> None:
    """``terraform validate`` of every module that needs only the AWS provider (the others
    need providers this machine cannot download: random, kubernetes, helm, kafka, grafana,
    snowflake). Against the mirror's AWS provider (5.100 here, where envs/prod pins ~> 6.0:
    an argument 6.x renamed would pass here and fail there)."""
    terraform = shutil.which("terraform")
    aws = PROVIDER_MIRROR / "registry.terraform.io" / "hashicorp" / "aws"
    if terraform is None or not aws.is_dir():
        pytest.skip(f"no terraform binary or no AWS provider under {PROVIDER_MIRROR}")
    modules = aws_only_modules()
    assert len(modules) >= 10, [m.name for m in modules]
    digest = hashlib.sha256(terraform_digest().encode())
    digest.update(subprocess.run([terraform, "version", "-json"], capture_output=True,
                                 text=True).stdout.encode())
    digest.update("".join(sorted(p.name for p in aws.iterdir())).encode())
    marker = VALIDATE_CACHE / f"{digest.hexdigest()}.pass"
    if marker.exists():
        return
    root = tmp_path / "root"
    validation_root(root, modules)
    cli_config = tmp_path / "terraformrc"
    cli_config.write_text(f"""provider_installation {{
  filesystem_mirror {{
    path    = "{PROVIDER_MIRROR}"
    include = ["registry.terraform.io/hashicorp/aws"]
  }}
}}
""")
    env = {**os.environ, "TF_CLI_CONFIG_FILE": str(cli_config), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1"}
    init = subprocess.run([terraform, "init", "-backend=false", "-input=false", "-no-color"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-2000:]
    done = subprocess.run([terraform, "validate", "-json", "-no-color"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout)
    problems = [f"{d['severity']}: {d['summary']} ({d.get('range', {}).get('filename')}:"
                f"{d.get('range', {}).get('start', {}).get('line')}) {d.get('detail', '')}"
                for d in result["diagnostics"] if d["severity"] == "error"]
    assert result["valid"] and not problems, "\n".join(problems)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps([m.name for m in modules]))


def test_terraform_files_are_formatted() -> None:
    """``terraform fmt -check``: parses every file with Terraform's own parser (python-hcl2
    accepts some things Terraform does not) and keeps the layout one style."""
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary")
    done = subprocess.run([terraform, "fmt", "-check", "-recursive", "-no-color", str(TERRAFORM)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CHECKPOINT_DISABLE": "1"})
    assert done.returncode == 0, f"not formatted (terraform fmt -recursive):\n{done.stdout}" \
        f"{done.stderr[-1000:]}"
