"""Lightning side: the LanguageModel, the TextDataModule, callbacks and checkpoint loading."""
