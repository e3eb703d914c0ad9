"""The docs' generated reference pages match the code (`python -m autoif_dagster.reference`
rewrites them); `make docs` builds the site with warnings as errors."""

from autoif_dagster import reference


def test_the_generated_reference_pages_are_current():
    assert reference.stale() == [], "run `python -m autoif_dagster.reference` and commit docs/reference/"


def test_a_page_that_differs_from_the_code_is_named(tmp_path):
    for name, build in reference.PAGES.items():
        (tmp_path / name).write_text(build())
    assert reference.stale(tmp_path) == []
    (tmp_path / "config.md").write_text(reference.config_page().replace("samples_per_instruction", "k"))
    (tmp_path / "cli.md").unlink()
    assert reference.stale(tmp_path) == ["config.md", "cli.md"]


def test_the_config_page_names_every_method_setting_with_its_default():
    from autoif_dagster.config import AutoIFConfig

    page = reference.config_page()
    config = AutoIFConfig()
    assert f"| `resources.autoif.config.verifiers.samples_per_instruction` | `int` | `{config.verifiers.samples_per_instruction}` |" in page
    assert f"`resources.autoif.config.scoring.min_score` | `float` | `{config.scoring.min_score}`" in page
