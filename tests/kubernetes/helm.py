"""Helm's official SDK (PyPI helm-python-sdk) for tests/kubernetes.rs.

    helm.py lint   CHART VALUES_JSON KUBE_VERSION   -> the lint report as JSON
    helm.py schema CHART VALUES_JSON                -> {"ok": bool, "error": str}
    helm.py render CHART VALUES_JSON NAMESPACE      -> {"template": [document, ...]} as JSON

No helm binary and no cluster: templates render offline, and `lookup`
returns nothing, as on a first install.
"""

import json
import sys

import helm_python as helm
import yaml


def main() -> None:
    command, chart, values = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    if command == "lint":
        report = helm.lint(chart, values, strict=True, kube_version=sys.argv[4], namespace="celador-system")
        print(json.dumps(report))
    elif command == "schema":
        try:
            helm.Chart.load(chart).validate_schema(values)
            print(json.dumps({"ok": True, "error": ""}))
        except helm.HelmError as e:
            print(json.dumps({"ok": False, "error": str(e)}))
    elif command == "render":
        rendered = helm.Chart.load(chart).render(values, name="celador", namespace=sys.argv[4], is_install=True)
        out = {}
        for template, text in sorted(rendered.items()):
            if template.endswith("NOTES.txt"):
                out[template] = text
                continue
            out[template] = [doc for doc in yaml.safe_load_all(text) if doc]
        print(json.dumps(out))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
