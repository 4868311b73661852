"""``textvae push``: upload an export and its model card (:mod:`textvae.hub.push`)."""

from __future__ import annotations

import argparse

from textvae.hub.push import push_export


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload a trained model, its tokenizer and a model card to the Hugging Face Hub",
        description=(
            "Upload an export (or a run directory's final/ export) to a Hub model repository in one "
            "commit: config, weights, tokenizer, recipe.yaml, train_summary.json, evaluation.json and "
            "a generated README.md model card. The token comes from --token, HF_TOKEN or `hf auth login`."
        ),
    )
    parser.add_argument("export", metavar="RUN_DIR_OR_EXPORT", help="a run directory or an export directory")
    parser.add_argument("repo_id", metavar="REPO_ID", help="user/name, org/name, or name (in your namespace)")
    parser.add_argument("--private", action="store_true", help="create the repository private (if it is new)")
    parser.add_argument("--revision", metavar="BRANCH", help="push to this branch (created from main if missing)")
    parser.add_argument("--commit-message", metavar="MSG", help="message of the Hub commit")
    parser.add_argument("--commit-description", metavar="TEXT", help="description of the Hub commit")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--token", metavar="TOKEN",
                        help="Hub token; prefer HF_TOKEN or `hf auth login`, which keep it out of shell history")
    parser.add_argument("--license", default="apache-2.0", help="license tag of the model card (default: apache-2.0)")
    parser.add_argument("--merge", action="store_true",
                        help="upload a pretrained backbone's weights too (LoRA merged), instead of a reference to it")
    parser.set_defaults(handler=run_push)


def run_push(args: argparse.Namespace) -> int:
    result = push_export(args.export, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message, commit_description=args.commit_description,
                         create_pr=args.create_pr, token=args.token, license=args.license, merge=args.merge)
    where = f"a pull request {result.pr_url}" if result.pr_url else result.commit_url
    print(f"pushed {len(result.files)} files to {result.repo_id}: {where}")
    return 0
