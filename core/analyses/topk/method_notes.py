"""Top-k order: how each section's method differs from the reference code (RESEARCH.md §1a, §1e), as captions.

Torch-free text, shown in the page's tabs and available to the command line; one entry per tab. Layers: l = the
residual after block l (1..L); the paper's constants are 0-based block indices (its block b = layer b + 1 here).
"""

from __future__ import annotations

METHOD_NOTES: dict[str, str] = {
    "saturation": (
        "As in the reference: the logit lens after every block; the rank-i token is the model's own final rank-i "
        "token (not the text's next token); a slot's saturation layer needs the slot held exactly (rank slot, not "
        "merely top-k) at every later layer; the filter keeps s_0 ≤ int(0.85·L) on 0-based block indices; bars with "
        "Student's t-tests; strict τ with ties counted as discordant, over the first k* ranks. Differences, and why: "
        "(1) a slot held at every layer saturates at layer 1 (block index 0), where the reference returns L, a bug "
        "its Kendall's τ then reads as the latest layer; (2) the BOS position is left out for tokenizers that add "
        "one (GPT-2, the reference's model, adds none), as it predicts nothing from the text; (3) texts are the "
        "bundled Wikipedia paragraphs (no CNN/DM or MMLU offline), truncated at the max tokens and counted (the "
        "reference silently dropped articles over 1024 tokens); (4) the mean τ leaves out positions with k* < 3 "
        "(the reference counts them as τ = 0; that mean is printed beside it); (5) the permutation p is "
        "(1 + #permuted ≥ actual) / (1 + permutations), never 0 (the reference prints the plain fraction, "
        "\"p < 0.001\" when it is 0); (6) the slots come from a top-k per layer instead of a full-vocabulary "
        "argsort: the same slots, without the L × T × V sort."),
    "baseline": (
        "The twin is this model's config with Hugging Face's default initialisation, the same tokenizer and texts "
        "(the reference: an untrained GPT2-XL built the same way). It runs the Saturation and Probing tabs' methods, "
        "with their differences; only the pooled probe is fitted for it (no per-layer probes), as in the reference."),
    "probing": (
        "As in the reference: task i on layers (s_(i−1), s_i], from the paper's block 5 (layer 6 here), after the "
        "0.85·L filter; per-layer class balancing, all layers pooled into one probe; StandardScaler + one-vs-rest "
        "logistic regression (lbfgs, C = 1, 1000 iterations); k-fold balanced accuracy, per-task accuracy and AUC; "
        "the same leaky random-feature control. Differences, and why: (1) features are read at each example's own "
        "position (the reference read them at the filtered column index, the wrong token whenever a position was "
        "filtered, which lowers its accuracies); (2) the balanced examples of each task are evenly spaced over the "
        "positions and at most 200 per layer and task (the reference takes the first n, over-weighting the first "
        "texts); (3) a layer two tasks claim at one position (out-of-order saturation) is left unlabelled; (4) the "
        "last block's features are pre-final-norm like every other layer (the reference's hs[L] is after ln_f); "
        "(5) the k-fold split is seeded (reproducible); (6) one probe per layer is shown besides the pooled one."),
    "intervention": (
        "Differences, and why: (1) the early token's raw, pre-final-norm residual after block e+o replaces the late "
        "token's residual entering block e+o+1 through a forward pre-hook at the late position only (the reference's "
        "post-hook returned the block's inputs, skipping the block at every position, it implanted post-ln_f "
        "vectors, and its script crashed on unpacking, RESEARCH.md §1e); (2) GPT2-XL's layer constants (gap 10, "
        "both saturating at block ≥ 10, of 48 blocks) are scaled by L/48; token distance 30 and offsets ±5 are "
        "kept; (3) at most the pairs-per-text setting per text, drawn at random (the reference: num_pairs // 10 "
        "texts); texts are bundled Wikipedia paragraphs under 250 words, truncated at 512 tokens; (4) offsets whose "
        "implant would land on the last layer (no block after it) are skipped and counted; (5) the tokens before "
        "the late one run once with a key/value cache: the same numbers, less work."),
    "early-exit": (
        "As in the reference: the baseline, the oracle at s_0, the probe's exit at the first layer it says task 2, "
        "softmax response and hidden-state saturation over the same threshold grids; label = the actual next token. "
        "Differences, and why: (1) an exit after block l costs l blocks (the reference counted the 0-based index, so "
        "an exit after block 1 cost 0 and its speedups are too high); (2) the probe is applied only from layer 6 on "
        "(the paper's block 5), where it was trained (the reference applied it at every layer); (3) every method "
        "builds its own exit array (the reference's aliased arrays let softmax and state inherit the classifier's "
        "edits); (4) the cosine compares pre-norm block outputs at every layer (the reference compared post-norm "
        "hs[L] with pre-norm hs[L−1] at the last one); (5) the probe is trained here on the first n texts and scored "
        "on the next n_eval, disjoint (the reference shipped a 5-task GPT2-XL probe trained elsewhere); (6) an extra "
        "point, probe (task ≥ 2), exits when the probe says any later task; (7) bundled Wikipedia paragraphs instead "
        "of 100 CNN/DM articles."),
    "better-lm": (
        "As in the reference: positions whose final top-1 is not the actual next token, split by s_1 (group A "
        "s_1 = L−1, group B s_1 ≤ L−7 on 0-based block indices, i.e. by layer L−6 here), pooled two-proportion "
        "z-test. Differences: the BOS position is left out; bundled Wikipedia paragraphs instead of CNN/DM."),
    "modalities": (
        "Differences, and why: (1) blank weights give a tiny random-init ViT / Whisper on generated images and audio "
        "(no weights, CIFAR-10 or LibriSpeech offline; the paper: ViT-L/16 on 5K CIFAR-10 images, Whisper-large on 5K "
        "LibriSpeech clips); give a local folder for real weights; (2) the probe's first layer is the paper's block "
        "5, or L // 3 for models too shallow for it; (3) Whisper is teacher-forced on each transcript and every "
        "transcript position counts."),
    "verdict": (
        "The intervals are ours (the paper reports t-tests, permutation p and fold SEMs): Wilson for a proportion, "
        "Newcombe (two Wilson intervals) for a difference of proportions, percentile bootstrap for a mean over "
        "positions or pairs. The rank-order claim is judged on paired per-position differences of consecutive ranks' "
        "saturation order, which the bars (means over all positions of each rank) only approximate."),
}
