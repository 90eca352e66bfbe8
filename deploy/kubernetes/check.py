"""Offline checks of the Kubernetes manifests beside this file.

Run by check.sh inside its venv (kubernetes-validate, which bundles the
JSON schemas of Kubernetes' OpenAPI for each minor version: no network).

    python check.py DIR VERSION...

For each YAML file in DIR, one line: `ok` or `FAIL` and why. Each object
is validated in strict mode (unknown fields are errors) against every
VERSION's schemas; a kind or apiVersion with no schema is an error too.
Then some of what the schemas leave to the API server (quantities such as
`8Gi`, port ranges, object names, label values), and what no schema can
see: duplicate keys, kustomization resources that do not exist, selectors
that miss the pods, names and keys of ConfigMaps and Secrets that no
manifest defines, and (when kubectl is on PATH) the objects
`kubectl kustomize DIR` renders. Exits 1 on any failure.
"""

import os
import re
import shutil
import subprocess
import sys

import yaml
from kubernetes_validate import utils as kv


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with a key twice (PyYAML keeps
    the last silently; the API server's decoder refuses it)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text):
    """The non-empty documents of a YAML stream."""
    return [doc for doc in yaml.load_all(text, Loader=UniqueKeyLoader) if doc is not None]


def name_of(obj):
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


def schema_errors(obj, versions):
    """Errors of one object against each version's strict schema."""
    if not isinstance(obj, dict) or "apiVersion" not in obj or "kind" not in obj:
        return ["not a Kubernetes object (no apiVersion or kind)"]
    errors = []
    for version in versions:
        try:
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top)"
            errors.append(f"{name_of(obj)} (k8s {e.version}): {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errors.append(e.message)
        except kv.VersionNotSupportedError as e:
            errors.append(e.message)
    return errors


# Formats the API server enforces but the OpenAPI schemas do not state.
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def server_rule_errors(obj):
    """Some checks the API server makes beyond the schemas."""
    errors = []
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    if obj.get("kind") in ("Service", "Namespace"):
        if not DNS_LABEL.match(name) or len(name) > 63:
            errors.append(f"{name_of(obj)}: name must be a DNS-1123 label")
    elif not DNS_SUBDOMAIN.match(name) or len(name) > 253:
        errors.append(f"{name_of(obj)}: name must be a DNS-1123 subdomain")

    def walk(node, path):
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}.{i}")
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in ("requests", "limits") and isinstance(value, dict):
                for res, qty in value.items():
                    if isinstance(qty, bool) or not QUANTITY.match(str(qty)):
                        errors.append(f"{name_of(obj)}: {here}.{res}: {qty!r} is not a quantity (e.g. 8Gi, 500m)")
            elif key == "sizeLimit" and not QUANTITY.match(str(value)):
                errors.append(f"{name_of(obj)}: {here}: {value!r} is not a quantity")
            elif key in ("containerPort", "port", "hostPort", "targetPort") and isinstance(value, int):
                if not 1 <= value <= 65535:
                    errors.append(f"{name_of(obj)}: {here}: {value} is not a port (1-65535)")
            elif key == "targetPort" and isinstance(value, str) and not (PORT_NAME.match(value) and len(value) <= 15):
                errors.append(f"{name_of(obj)}: {here}: {value!r} is not a port name")
            elif key == "labels" and isinstance(value, dict):
                for label, text in value.items():
                    if not isinstance(text, str) or len(text) > 63 or not LABEL_VALUE.match(text):
                        errors.append(f"{name_of(obj)}: {here}.{label}: {text!r} is not a label value")
            walk(value, here)

    walk(obj, "")
    return errors


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cross_errors(objects, namespace):
    """What the schemas cannot check: how the objects refer to each other."""
    errors = []
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)
    data_keys = {}  # (kind, name) -> keys
    for kind, field in (("ConfigMap", "data"), ("Secret", "stringData"), ("Secret", "data")):
        for obj in by_kind.get(kind, []):
            keys = data_keys.setdefault((kind, obj["metadata"]["name"]), set())
            keys.update((obj.get(field) or {}).keys())
    if namespace:
        for obj in objects:
            ns = obj["metadata"].get("namespace")
            if obj["kind"] != "Namespace" and ns not in (None, namespace):
                errors.append(f"{name_of(obj)} is in namespace {ns}, kustomization says {namespace}")
    deployments = by_kind.get("Deployment", [])
    for dep in deployments:
        spec = dep["spec"]
        pod_labels = spec["template"]["metadata"].get("labels", {})
        if not matches(spec["selector"].get("matchLabels"), pod_labels):
            errors.append(f"{name_of(dep)}: selector does not match its pod labels")
        for container in spec["template"]["spec"].get("containers", []):
            for src in container.get("envFrom", []):
                for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if ref in src and (kind, src[ref]["name"]) not in data_keys:
                        errors.append(f"{name_of(dep)}: envFrom names {kind} {src[ref]['name']}, defined nowhere")
            for env in container.get("env", []):
                source = env.get("valueFrom") or {}
                for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if ref not in source:
                        continue
                    name, key = source[ref]["name"], source[ref]["key"]
                    if key not in data_keys.get((kind, name), set()):
                        errors.append(f"{name_of(dep)}: env {env['name']} wants key {key} of {kind} {name}, defined nowhere")
    all_pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in deployments]
    for svc in by_kind.get("Service", []):
        if not any(matches(svc["spec"].get("selector"), labels) for labels in all_pod_labels):
            errors.append(f"{name_of(svc)}: selector matches no Deployment's pods")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not any(matches(pdb["spec"]["selector"].get("matchLabels"), labels) for labels in all_pod_labels):
            errors.append(f"{name_of(pdb)}: selector matches no Deployment's pods")
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        if (target["kind"], target["name"]) not in names:
            errors.append(f"{name_of(hpa)}: scales {target['kind']}/{target['name']}, defined nowhere")
    return errors


def report(label, errors, detail=""):
    if errors:
        print(f"FAIL {label}")
        for error in errors:
            print(f"     {error}")
    else:
        print(f"ok   {label}{'  ' + detail if detail else ''}")
    return not errors


def main():
    directory, versions = sys.argv[1], sys.argv[2:]
    if not versions:
        sys.exit("usage: check.py DIR VERSION...")
    shown = ", ".join(versions)
    files = sorted(f for f in os.listdir(directory) if f.endswith((".yaml", ".yml")))
    good = True
    objects = []
    kustomization = None
    for name in files:
        path = os.path.join(directory, name)
        try:
            with open(path) as f:
                docs = load(f.read())
        except yaml.YAMLError as e:
            good &= report(path, [f"YAML: {e}"])
            continue
        if not docs:
            good &= report(path, ["no YAML document"])
            continue
        if name in ("kustomization.yaml", "kustomization.yml"):
            kustomization = docs[0]
            errors = []
            if len(docs) != 1 or kustomization.get("kind") != "Kustomization":
                errors.append("expected one document of kind Kustomization")
            for resource in kustomization.get("resources") or []:
                if not os.path.exists(os.path.join(directory, resource)):
                    errors.append(f"resource {resource} does not exist")
            listed = len(kustomization.get("resources") or [])
            good &= report(path, errors, f"Kustomization, {listed} resources exist")
            continue
        errors = [e for doc in docs for e in schema_errors(doc, versions)]
        if not errors:
            errors = [e for doc in docs for e in server_rule_errors(doc)]
        good &= report(path, errors, f"{', '.join(name_of(d) for d in docs)}  (strict, k8s {shown})")
        if not errors:
            objects.extend(docs)
    namespace = (kustomization or {}).get("namespace")
    if good:
        good &= report("cross-references", cross_errors(objects, namespace),
                       "selectors, ConfigMap/Secret names and keys, namespaces, HPA target")
    else:
        print("skip cross-references  (fix the errors above first)")
    label = f"kubectl kustomize {directory}"
    kubectl = shutil.which("kubectl")
    if kustomization is None:
        pass
    elif kubectl is None:
        print(f"skip {label}  (kubectl not on PATH; the files above were checked one by one)")
    else:
        run = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            good &= report(label, [line for line in run.stderr.splitlines() if line.strip()] or ["failed"])
        else:
            rendered = load(run.stdout)
            errors = [e for doc in rendered for e in schema_errors(doc, versions)]
            if not errors:
                errors = [e for doc in rendered for e in server_rule_errors(doc)]
            if not errors:
                # The Secret is made outside the kustomization (its example
                # is deliberately not listed): count the one checked above.
                secrets = [o for o in objects if o["kind"] == "Secret"]
                errors = cross_errors(rendered + secrets, namespace)
            good &= report(label, errors, f"{len(rendered)} objects rendered, valid")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
