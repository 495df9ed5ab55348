"""The `vlfuse` command. Thin: parses arguments, calls the library, prints results.

Heavy imports (torch, Lightning) happen inside commands so `vlfuse --help` stays instant.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import VLFuseError

app = typer.Typer(help="Image-text fusion: generate data, train, evaluate, predict.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Datasets: generate the built-in one, inspect a configured split.", no_args_is_help=True)
app.add_typer(data_app, name="data")
from .cli_index import index_app  # noqa: E402 - typer apps of their own files; light to import

app.add_typer(index_app, name="index")
from .cli_serve import serve  # noqa: E402

app.command("serve")(serve)
from .cli_data_tools import cache_app, data_coco_questions, data_shard  # noqa: E402 - feature cache, shards

app.add_typer(cache_app, name="cache")
data_app.command("shard")(data_shard)
data_app.command("coco-questions")(data_coco_questions)

SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key: key.sub=value")]


def _echo_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False))


@data_app.command("shapes")
def data_shapes(
    out_dir: Path,
    images: int = typer.Option(10000, help="Number of images (test and val get 5% each)."),
    questions_per_image: int = typer.Option(20, help="Questions per image."),
    lang: str = typer.Option("en", help="Question language: en or zh."),
    size: int = typer.Option(64, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    dialogs: Optional[bool] = typer.Option(None, "--dialogs/--no-dialogs", help="Also write VisDial-layout "
                                           "dialogues to OUT_DIR/dialog/ (default: for English data)."),
) -> None:
    """Generate the built-in Sort-of-CLEVR-style dataset (VQA v2 + COCO captions layouts)."""
    from .data.shapes import generate

    manifest = generate(out_dir, images=images, questions_per_image=questions_per_image, lang=lang, size=size,
                        seed=seed, dialogs=dialogs)
    typer.echo(f"Wrote {out_dir}: " + ", ".join(f"{k} {v['images']} images / {v['questions']} questions"
                                                for k, v in manifest["splits"].items()))


@data_app.command("inspect")
def data_inspect(
    config: Path,
    split: str = typer.Option("train", help="Which split of the data config: train, val or test."),
    json_: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of text."),
    top: int = typer.Option(10, help="How many of the most common answers to list."),
    decode: bool = typer.Option(False, "--decode", help="Also decode every image and list the ones that fail."),
    set_: SetOption = None,
) -> None:
    """Summarise a configured split: counts, top answers, question lengths and types, bad samples."""
    from .config import load_config
    from .data.inspect import format_report, inspect_split

    report = inspect_split(load_config(config, set_ or []).data, split, top, decode,
                           progress=not json_ and sys.stdout.isatty())
    if json_:
        _echo_json(report)
    else:
        typer.echo(format_report(report))


@app.command()
def train(
    config: Path,
    set_: SetOption = None,
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in out_dir."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start the encoders and fusion from this model "
                                                             "directory (e.g. what `vlfuse pretrain` wrote)."),
) -> None:
    """Train a model from a YAML config; writes OUT_DIR/model (safetensors) and OUT_DIR/eval.json."""
    from .config import load_config
    from .tasks import train as run_training

    loaded = load_config(config, set_ or [])
    if init is not None:
        loaded.train.init = str(init)
    result = run_training(loaded, resume=resume)
    if result.interrupted:
        typer.echo(f"Interrupted: {result.note}. Continue with: vlfuse train {config} --resume", err=True)
        raise typer.Exit(130)
    typer.echo(f"Model saved to {result.model_dir} ({result.wall_seconds:.0f} s)")
    if result.test_metrics:
        _print_metrics(result.test_metrics, loaded.task)
    if result.note:  # the last line: a time cap cut the run short
        more = " --set train.max_minutes=MORE" if result.stopped_by == "time cap" else ""
        typer.echo(f"{result.note}; continue it with: vlfuse train {config} --resume{more}")


@app.command()
def pretrain(
    config: Path,
    set_: SetOption = None,
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in out_dir."),
) -> None:
    """Pre-train a VQA model's encoders + fusion on image-caption pairs (ITC, ITM, MLM, MRM, ... as
    `pretrain.objectives` weighs them); fine-tune from OUT_DIR/model with `vlfuse train CFG --init`."""
    from .config import load_config
    from .errors import ConfigError
    from .tasks import train as run_training

    loaded = load_config(config, set_ or [])
    if loaded.task not in ("vqa", "pretrain"):  # vqa is the default: a VQA config's model section is the point
        raise ConfigError(f"config key 'task' is {loaded.task}: vlfuse pretrain runs task pretrain")
    loaded.task = "pretrain"
    result = run_training(loaded, resume=resume)
    if result.interrupted:
        typer.echo(f"Interrupted: {result.note}. Continue with: vlfuse pretrain {config} --resume", err=True)
        raise typer.Exit(130)
    typer.echo(f"Pre-trained encoders + fusion saved to {result.model_dir} ({result.wall_seconds:.0f} s); "
               f"fine-tune with: vlfuse train CONFIG --init {result.model_dir}")
    if result.test_metrics:
        _print_metrics(result.test_metrics, loaded.task)


def _print_metrics(metrics: dict, task: str) -> None:
    """The task's own table on stdout; what evaluation skipped, on stderr."""
    from .tasks import TASKS
    from .tasks.base import skipped_line

    text = TASKS[task].format_metrics(metrics)
    typer.echo(text)
    skipped = skipped_line(metrics)
    if skipped and skipped not in text:
        typer.echo(skipped, err=True)


@app.command("eval")
def eval_(
    model_dir: Path,
    data: Optional[Path] = typer.Option(None, help="A YAML config whose data section to use, or a .jsonl/.csv "
                                                   "table; default: the model's own config."),
    split: str = typer.Option("test", help="Which split of the data config: train, val or test."),
    out: Optional[Path] = typer.Option(None, help="Write metrics JSON here (default MODEL_DIR/../eval.json)."),
    set_: SetOption = None,
) -> None:
    """Evaluate a saved model: VQA accuracy per question family, retrieval Recall@K both ways, or captions
    (BLEU-1..4, ROUGE-L, CIDEr-D against every reference; decoding from --set captioning.beam_size=...)."""
    from .config import load_config
    from .tasks import evaluate_split

    config = load_config(model_dir / "config.yaml", set_ or [])
    if data is not None and data.suffix.lower() in (".jsonl", ".csv"):
        config.data.format, config.data.root = "jsonl", "."
        config.data.test, split = type(config.data.train)(path=str(data)), "test"
        config.data.scene_graphs = None  # a table carries no scene graphs
    elif data is not None:
        config.data = load_config(data, set_ or []).data
    metrics = evaluate_split(model_dir, config, split, out or model_dir.parent / f"eval_{split}.json")
    _print_metrics(metrics, config.task)
    run_json = model_dir.parent / "run.json"  # the training run that wrote this model, when beside it
    note = json.loads(run_json.read_text(encoding="utf-8")).get("note") if run_json.is_file() else None
    if note:
        typer.echo(f"note: this model's training was {note}")


@app.command()
def predict(
    model_dir: Path,
    image: Path = typer.Option(..., help="Image file."),
    question: Optional[str] = typer.Option(None, help="Question about the image (VQA models; a captioning "
                                                      "model takes none)."),
    top_k: int = typer.Option(5, help="How many answers to list."),
    history: Optional[list[str]] = typer.Option(None, "--history", help="Dialogue models: the caption, then one "
                                                "'question answer' per earlier round (repeat the option)."),
    candidate: Optional[list[str]] = typer.Option(None, "--candidate", help="Dialogue models: an answer to rank "
                                                  "(repeat; default: every answer seen in training). "
                                                  "Multiple-choice models: a candidate answer (repeat)."),
    choices: Optional[str] = typer.Option(None, "--choices", help="Multiple-choice (vqa_mc) models: the candidate "
                                                                  "answers, '|'-separated: \"red|green|blue\"."),
    scene: Optional[Path] = typer.Option(None, help="Models trained with scene graphs (data.scene_graphs): the "
                                                    "image's scene as JSON (built-in {size, objects}, NLVR "
                                                    "structured_rep, or {boxes, categories})."),
    knowledge_graph: Optional[Path] = typer.Option(None, help="Models trained with data.knowledge_graph: the "
                                                   "image's facts (.jsonl / .csv triples) joined to --scene "
                                                   "instead of the model's own graph (per_sample models need it)."),
) -> None:
    """Answer a question about an image (top-k probabilities too), choose among --choices (a multiple-choice
    model), or caption it (a captioning model)."""
    from .errors import ConfigError
    from .predict import load
    from .tasks import saved_task

    if saved_task(model_dir) == "vqa_mc":
        return _choose(model_dir, image, question, (choices.split("|") if choices else []) + (candidate or []))
    if saved_task(model_dir) == "dialogue":  # ranks candidate answers; prints the scores (logits), best first
        from .tasks.dialogue.predict import load_dialogue

        if question is None:
            raise ConfigError(f"--question is required: {model_dir} holds a dialogue model")
        ranking = load_dialogue(model_dir).rank(image, question, history or [], candidate or None, top_k)
        typer.echo(ranking.answer)
        if ranking.written is not None:
            typer.echo(f"  written by the decoder: {ranking.written}")
        for answer, score in ranking.top:
            typer.echo(f"  {score:8.3f}  {answer}")
        return
    predictor = load(model_dir)
    if getattr(predictor, "task", None) == "captioning":
        if question is not None:
            raise ConfigError(f"{model_dir} holds a captioning model: it takes --image only, not --question")
        typer.echo(predictor.caption(image))
        return
    if question is None:
        raise ConfigError(f"--question is required: {model_dir} holds a {predictor.config.task} model")
    with warnings.catch_warnings(record=True) as notes:  # e.g. a scene-graph model given no --scene
        warnings.simplefilter("always")
        result = predictor.predict(image, question, top_k=top_k, scene=scene, knowledge_graph=knowledge_graph)
    for note in notes:
        typer.echo(f"note: {note.message}", err=True)
    typer.echo(result.answer)
    for answer, prob in result.top:
        typer.echo(f"  {prob:7.2%}  {answer}")


def _choose(model_dir: Path, image: Path, question: str | None, choices: list[str]) -> None:
    """A multiple-choice model: the best candidate, then every candidate's score and share, best first."""
    from .errors import ConfigError
    from .tasks.vqa_mc.predict import load as load_chooser

    if question is None or len(choices) < 2:
        raise ConfigError(f"{model_dir} holds a multiple-choice model: pass --question and at least two "
                          "candidates with --choices \"a|b|c\" (or --candidate repeated)")
    choice = load_chooser(model_dir).choose(image, question, choices)
    typer.echo(choice.answer)
    for answer, score, share in choice.ranked:
        typer.echo(f"  {share:7.2%}  {score:8.3f}  {answer}")


@app.command()
def generate(
    model_dir: Path,
    text: list[str] = typer.Option(..., "--text", help="A description of the image (repeat for several)."),
    out: Path = typer.Option(..., "--out", help="PNG to write: the image itself for one text and --n 1, else a "
                                               "grid with each text beside its images."),
    n: int = typer.Option(1, "--n", help="Images per text."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed: the same seed and texts give the same images."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale (default: "
                                             "the model's generation.guidance; 1 = none)."),
    candidates: Optional[int] = typer.Option(None, "--candidates", help="Draw this many images for each one "
                                             "kept: the best match under --ranker (default: generation.candidates)."),
    ranker: Optional[Path] = typer.Option(None, "--ranker", help="A trained retrieval model directory that picks "
                                          "the best candidate (default: generation.ranker)."),
) -> None:
    """Draw images from descriptions with a text-to-image model (task generation)."""
    from .tasks.generation.predict import caption_grid, generate as draw, load_generator

    generator = load_generator(model_dir, guidance, candidates, ranker)
    rows = [(t, draw(generator, t, n, seed)) for t in text]
    picture = rows[0][1][0] if len(rows) == 1 and n == 1 else caption_grid(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    picture.save(out)
    typer.echo(f"Wrote {out} ({len(text)} text(s) x {n} image(s), {generator.config.data.image_size} px, seed {seed})")


@app.command("export")
def export_(
    model_dir: Path,
    format_: str = typer.Option("onnx", "--format", help="Export format: onnx (run by onnxruntime)."),
    int8: bool = typer.Option(False, "--int8", help="Dynamic int8 quantization (onnxruntime's quantizer)."),
    out: Optional[Path] = typer.Option(None, help="Folder to write (default MODEL_DIR_onnx or MODEL_DIR_onnx_int8)."),
) -> None:
    """Export a VQA / matching / classification / retrieval model to ONNX for onnxruntime; `vlfuse predict`,
    `serve` and `index` take the folder."""
    from .export import export_model

    info = export_model(model_dir, out, int8=int8, fmt=format_)
    check = info["check"]
    what = "best image" if info["task"] == "retrieval" else "answer"
    typer.echo(f"Wrote {info['out_dir']} ({info['precision']}: {', '.join(info['graphs'])}); against PyTorch on a "
               f"check batch: max |difference| {check['max_abs_diff']:.2g}, same {what} for "
               f"{check['same_answers']}/{check['questions']}")


@app.command("explain")
def explain_(
    model_dir: Path,
    image: Path = typer.Option(..., help="Image file."),
    question: str = typer.Option(..., help="Question about the image."),
    out: Path = typer.Option(Path("explanation.png"), help="Where to write the figure (PNG)."),
    method: str = typer.Option("attention", help="attention (raw word-to-image attention), rollout (attention "
                                                 "flow through the layers); for any fusion: gradcam, saliency "
                                                 "(gradient norm) or occlusion (each token left out)."),
    layer: Optional[int] = typer.Option(None, help="attention: that layer only; rollout: stop after it "
                                                   "(default: mean over layers / all layers)."),
    head: Optional[int] = typer.Option(None, help="One attention head (default: the mean over heads)."),
) -> None:
    """Show where in the image the model looked: the image, a heatmap over it, one map per word."""
    from .explain.api import explain
    from .explain.plot import plot_explanation

    result = explain(model_dir, image, question, method=method, layer=layer, head=head)
    plot_explanation(result, out)
    typer.echo(f"{result.answer} ({result.confidence:.0%}); figure: {out}")


@app.command("explain-sanity")
def explain_sanity(
    model_dir: Path,
    data: Optional[Path] = typer.Option(None, help="A YAML config whose data section to use (the built-in shapes "
                                                   "data); default: the model's own config."),
    split: str = typer.Option("test", help="Which split: train, val or test."),
    limit: int = typer.Option(200, help="How many one-object questions (shape/left/top) to check."),
    method: str = typer.Option("attention", help="attention, rollout, gradcam, saliency or occlusion."),
    out: Optional[Path] = typer.Option(None, help="Write the JSON here (default MODEL_DIR/../explain_sanity_"
                                                  "METHOD.json)."),
) -> None:
    """How much of the heatmap falls on the object a question names, against that object's share of the image."""
    from .config import load_config
    from .explain.sanity import explain_sanity as run_sanity

    report = run_sanity(model_dir, load_config(data) if data else None, split, limit, method)
    out = out or model_dir.parent / f"explain_sanity_{method}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, s in [("overall", report["overall"]), *report["families"].items()]:
        word = "" if s.get("word_mass") is None else f", colour word {s['word_mass']:.3f}"
        typer.echo(f"{name:8} {s['questions']:4d} q: on object {s['object_mass']:.3f} vs area {s['object_area']:.3f} "
                   f"(x{s['object_lift']:.1f}), uniform tokens {s['uniform_mass']:.3f}; box {s['box_mass']:.3f} vs "
                   f"{s['box_area']:.3f}; pointing {s['pointing']:.2f}{word}; accuracy {s['correct']:.2f}")
    typer.echo(f"Wrote {out}")


@app.command()
def compare(
    config: Path,
    fusions: Optional[str] = typer.Option(None, help="Comma-separated fusion names (default: all of them)."),
    max_minutes: Optional[float] = typer.Option(
        None, help="A safety cap per run, in minutes; the budget is the config's train.epochs (a run the cap cuts "
                   "is marked (cut) in the leaderboard)."),
    seeds: int = typer.Option(1, help="Seeds per fusion (config seed, +1, ...); spread is reported."),
    out: Path = typer.Option(Path("runs/compare"), help="Folder for the runs and the leaderboard."),
    set_: SetOption = None,
) -> None:
    """Train each fusion on the same data, encoders, budget and seeds; write a leaderboard (md, json, png)."""
    from .compare import compare as run_compare
    from .config import load_config
    from .models.factory import FUSIONS

    names = [f.strip() for f in fusions.split(",") if f.strip()] if fusions else list(FUSIONS)
    command = "vlfuse " + " ".join(sys.argv[1:])
    md = run_compare(load_config(config, set_ or []), names, out, max_minutes, seeds, command)
    typer.echo(md.read_text(encoding="utf-8").split("## Per question family")[0].rstrip())
    typer.echo(f"Leaderboard: {md}")


@app.command()
def fewshot(
    model_dir: Path,
    data: Optional[Path] = typer.Option(None, help="A YAML config whose data section to use (support from its "
                                                   "train split, query from test), or a .jsonl/.csv table; "
                                                   "default: the model's own config."),
    shots: str = typer.Option("1,5,10", help="Examples per new answer, comma-separated."),
    seeds: int = typer.Option(5, help="Support sets drawn per k (seeds 0..N-1)."),
    answers: Optional[str] = typer.Option(None, help="The new answers, comma-separated; default: every answer "
                                                     "of the data the model has no class for."),
    methods: str = typer.Option("prototype,linear_probe,finetune", help="Comma-separated: prototype, linear_probe, "
                                "finetune (the head and the fusion's top layer)."),
    ceiling: bool = typer.Option(False, help="Also fit the linear probe on every support example of the new "
                                              "answers: the most the frozen features give (slower)."),
    out: Optional[Path] = typer.Option(None, help="Write the result JSON here (default MODEL_DIR/../fewshot.json)."),
    plot: Optional[Path] = typer.Option(None, help="Draw the learning curve (k vs accuracy) to this PNG."),
) -> None:
    """Few-shot transfer: learn answers the model never saw from k examples each (prototypes or a linear
    probe on its frozen fused features, or fine-tuning a new head with the fusion's top layer); prints
    accuracy as mean ± sd over seeds for each k."""
    from .errors import ConfigError
    from .fewshot import fewshot as run_fewshot
    from .fewshot.report import format_fewshot

    try:
        ks = [int(k) for k in shots.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--shots: expected integers separated by commas, got {shots!r}") from None
    split = (lambda text: [a.strip() for a in text.split(",") if a.strip()])
    result = run_fewshot(model_dir, data, ks, seeds, None if answers is None else split(answers), split(methods),
                         ceiling=ceiling, out=out or model_dir.parent / "fewshot.json")
    typer.echo(format_fewshot(result))
    if plot is not None:
        from .fewshot.plot import plot_curve

        typer.echo(f"Curve: {plot_curve(result, plot)}")


@app.command()
def demo(
    out: Path = typer.Option(Path("vlfuse-demo"), help="Folder for data, model and report."),
    images: int = typer.Option(4000, help="Images in the generated dataset."),
    set_: SetOption = None,
) -> None:
    """Generate data, train the demo model for its epochs (a line with the ETA as it goes), evaluate it and
    write report.md. A slower machine takes longer for the same model; train.max_minutes is only a safety
    cap (the report says when it cut training, and running the demo again continues it)."""
    from .demo import run_demo

    report = run_demo(out, images=images, overrides=set_ or [])
    typer.echo(f"Report: {report}")


def main() -> None:
    try:
        app()
    except VLFuseError as exc:  # our own errors are messages for a person, not tracebacks
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg="red", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
