"""Next-token extraction: how well each lens reads the model's own prediction from one residual vector."""

from ui.glossary import glossary
from ui.page import page, stop_page
from ui.views import extraction as extraction_view

CAPTION = (
    "Patchscopes §4.1 and logitscope: for each text one random position, the model's own top-1 there (y\\*), and "
    "for every layer and method the distribution read from that single residual vector (layer l = after block l, "
    "0 = the embeddings). Precision@1 asks whether the reading's top-1 is y\\*; the two surprisals are the two "
    "codebases' definitions (they are not comparable with each other). The prompt in the sidebar is not used here."
)

with page("Extraction", ":material/target:", extraction_view.URL_KEYS, heading="Next-token extraction",
          caption=CAPTION) as selection:
    glossary(["l", "y*", "p@1", "n", "CI"])
    spec_key = selection.spec.key()
    request = extraction_view.controls(spec_key)
    extraction_view.learned_lens_hint(spec_key)
    if request is None:
        stop_page()  # controls() said what is missing
    rows = extraction_view.run_job(spec_key, request)
    if rows is None:
        stop_page()  # the Run button, the job's progress or its error is shown
    extraction_view.show_result(rows)
