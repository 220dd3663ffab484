"""The command-line commands; see ``bert_tutorial.cli``."""
