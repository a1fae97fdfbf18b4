"""Check the cert-manager resources of rendered manifests against cert-manager's API.

Kubernetes' own schemas do not cover cert-manager's custom resources, so
kubernetes-validate skips them. This script validates every
`cert-manager.io/v1` object in a rendered manifest file (the output of
`kubectl kustomize`) with the models of the PyPI package
cloudcoil-models-cert-manager, which are generated from cert-manager's CRDs.
The models check types, enumerations (key algorithms, usages, issuer kinds)
and required fields. Fields that the API does not define are reported as
unknown, as `kubectl apply --validate=strict` would report them.

Usage: python3 check_cert_manager.py RENDERED.yaml

Exit status: 0 when every object is valid, 1 when one is not, 3 when the
models are not installed (`pip install -r tests/requirements.txt`).
"""

import sys

import yaml

try:
    import pydantic
    from cloudcoil.models.cert_manager import v1 as cert_manager_v1
except ImportError as error:
    print(f"cloudcoil-models-cert-manager is not installed: {error}", file=sys.stderr)
    sys.exit(3)

API_VERSION = "cert-manager.io/v1"


def unknown_fields(original, understood, path):
    """List the paths in `original` that are missing from `understood`.

    `understood` is the object as the model dumps it back. The model drops
    fields it does not define while parsing, so they appear in `original`
    only.
    """
    found = []
    if isinstance(original, dict) and isinstance(understood, dict):
        for key, value in original.items():
            if key not in understood:
                found.append(f"{path}.{key}")
            else:
                found.extend(unknown_fields(value, understood[key], f"{path}.{key}"))
    elif isinstance(original, list) and isinstance(understood, list):
        for index, (item, understood_item) in enumerate(zip(original, understood)):
            found.extend(unknown_fields(item, understood_item, f"{path}[{index}]"))
    return found


def check(document):
    """Return the problems of one cert-manager object, empty when it is valid."""
    kind = document.get("kind", "")
    if document.get("apiVersion") != API_VERSION:
        return [f"apiVersion {document.get('apiVersion')!r} is not {API_VERSION}"]
    model = getattr(cert_manager_v1, kind, None)
    if model is None or not isinstance(model, type) or not issubclass(model, pydantic.BaseModel):
        return [f"kind {kind!r} is not a {API_VERSION} kind"]
    try:
        parsed = model.model_validate(document)
    except pydantic.ValidationError as error:
        return [str(error)]
    understood = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"unknown field {path}" for path in unknown_fields(document, understood, "")]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as file:
        documents = [d for d in yaml.safe_load_all(file) if d]
    checked = 0
    failed = 0
    for document in documents:
        if not str(document.get("apiVersion", "")).startswith("cert-manager.io/"):
            continue
        checked += 1
        name = f"{document.get('kind')}/{document.get('metadata', {}).get('name')}"
        problems = check(document)
        for problem in problems:
            print(f"ERROR {name}: {problem}")
        if problems:
            failed += 1
        else:
            print(f"OK {name}")
    print(f"{checked} cert-manager objects checked, {failed} invalid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
