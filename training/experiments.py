"""Placeholder replaced below."""

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run_experiments(args: argparse.Namespace) -> None:
    raise NotImplementedError
