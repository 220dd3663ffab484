"""The package's recipes around the tutorial: fine-tuning (``finetuning``) and pre-training (``pretraining``), their
data (``sentiment_data``, ``pretraining_data``), pre-trained models and the save format (``encoders``, ``hub``),
scores (``evaluation``) and export (``export``). They may switch on the speed plug-in; the tutorial never does."""
