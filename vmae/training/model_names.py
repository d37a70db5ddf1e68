"""The model names `models.create_model` builds, kept free of torch so that a config can check --model before
any work starts (a wrong name must not surface as a traceback from deep inside model building)."""
import difflib

# name -> size (models.SIZES)
PRETRAIN_MODELS = {
    "pretrain_videomae_small_patch16_224": "small",
    "pretrain_videomae_base_patch16_224": "base",
    "pretrain_videomae_large_patch16_224": "large",
    "pretrain_videomae_huge_patch16_224": "huge",
    "pretrain_videomae_giant_patch14_224": "giant",
    "pretrain_videomae_test": "test",
    "pretrain_videomae_test_patch14": "test_patch14",
}
FINETUNE_MODELS = {
    "vit_small_patch16_224": "small",
    "vit_base_patch16_224": "base",
    "vit_large_patch16_224": "large",
    "vit_huge_patch16_224": "huge",
    "vit_giant_patch14_224": "giant",
    "vit_test": "test",
    "vit_test_patch14": "test_patch14",
}
KINDS = {"pretrain": (PRETRAIN_MODELS, "pretraining model (encoder and decoder)"),
         "finetune": (FINETUNE_MODELS, "classifier (encoder and head)")}


def model_problem(name: str, kind: str, option: str = "--model") -> str | None:
    """Why `name` cannot be the model of a `kind` ("pretrain" or "finetune") run, with the fix; None if it can."""
    own, what = KINDS[kind]
    if name in own:
        return None
    other, other_what = KINDS["finetune" if kind == "pretrain" else "pretrain"]
    if name in other:
        same_size = next(n for n, size in own.items() if size == other[name])
        return f"{option} {name} is a {other_what}; this command trains a {what}: pass {option} {same_size}"
    close = difflib.get_close_matches(name, list(own), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown {option} {name!r}{hint}; choose one of {', '.join(own)}"
