"""Install tfdebias. Top-level datasets/, tuning/ and export/ become tfdebias.datasets,
tfdebias.tuning and tfdebias.export, so nothing named bare `datasets` lands in
site-packages (it would shadow Hugging Face's `datasets`)."""

from setuptools import find_packages, setup

MAPPED = {"datasets": "tfdebias.datasets", "tuning": "tfdebias.tuning", "export": "tfdebias.export"}


def _packages():
    pkgs = find_packages(include=["tfdebias", "tfdebias.*"])
    for folder, dotted in MAPPED.items():
        pkgs.append(dotted)
        pkgs += [f"{dotted}.{sub}" for sub in find_packages(where=folder)]
    return pkgs


setup(
    packages=_packages(),
    package_dir={"tfdebias": "tfdebias", **{d: f for f, d in MAPPED.items()}},
    package_data={
        "tfdebias.datasets": ["*/dummy_data/**/*", "*/dummy_data/*", "*/*.tsv", "*/*.bib", "*/*.md"],
    },
)
