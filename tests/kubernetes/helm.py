"""Helm's official SDK (PyPI helm-python-sdk) for tests/kubernetes.rs.

    helm.py lint   CHART VALUES_JSON KUBE_VERSION   -> the lint report as JSON
    helm.py schema CHART VALUES_JSON                -> {"ok": bool, "error": str}
    helm.py render CHART VALUES_JSON NAMESPACE      -> {"template": [document, ...]} as JSON
    helm.py schema-each CHART [VALUES_JSON, ...]    -> [{"ok": bool, "error": str}, ...]
    helm.py render-each CHART [VALUES_JSON, ...] NS -> [{"ok": bool, "error": str, "render": {...}}, ...]

The -each forms load the chart once for many value sets (one process).

No helm binary and no cluster: templates render offline, and `lookup`
returns nothing, as on a first install.
"""

import json
import sys

import helm_python as helm
import yaml


def render(chart, values, namespace):
    rendered = chart.render(values, name="celador", namespace=namespace, is_install=True)
    out = {}
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            out[template] = text
            continue
        out[template] = [doc for doc in yaml.safe_load_all(text) if doc]
    return out


def main() -> None:
    command, chart, values = sys.argv[1], sys.argv[2], sys.argv[3]
    # @FILE: the values are in FILE (many value sets outgrow an argument).
    values = json.load(open(values[1:])) if values.startswith("@") else json.loads(values)
    if command == "schema-each":
        loaded, answers = helm.Chart.load(chart), []
        for one in values:
            try:
                loaded.validate_schema(one)
                answers.append({"ok": True, "error": ""})
            except helm.HelmError as e:
                answers.append({"ok": False, "error": str(e)})
        print(json.dumps(answers))
    elif command == "render-each":
        loaded, answers = helm.Chart.load(chart), []
        for one in values:
            try:
                answers.append({"ok": True, "error": "", "render": render(loaded, one, sys.argv[4])})
            except helm.HelmError as e:
                answers.append({"ok": False, "error": str(e)})
        print(json.dumps(answers))
    elif command == "lint":
        report = helm.lint(chart, values, strict=True, kube_version=sys.argv[4], namespace="celador-system")
        print(json.dumps(report))
    elif command == "schema":
        try:
            helm.Chart.load(chart).validate_schema(values)
            print(json.dumps({"ok": True, "error": ""}))
        except helm.HelmError as e:
            print(json.dumps({"ok": False, "error": str(e)}))
    elif command == "render":
        print(json.dumps(render(helm.Chart.load(chart), values, sys.argv[4])))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
