from pydantic import Field

from entity_training import Plugin, PluginConfig, ReviewFailed, Stage
from plugins.data.conversation_files import read_conversations


class BannedPhrasesPlugin(Plugin):
    """Reject a run whose training answers contain a banned phrase."""

    name = "banned_phrases"
    description = "Fail REVIEW when an assistant reply in the training data contains a banned phrase."
    supported_stages = (Stage.REVIEW,)
    dependencies = ("dataset.train",)  # written by dataset_loader in INPUT

    class ConfigModel(PluginConfig):
        phrases: list[str] = Field(default_factory=list, description="Phrases that must not appear.")
        case_sensitive: bool = Field(False, description="Match case exactly.")

    async def _execute_impl(self, context):
        def norm(text: str) -> str:
            return text if self.config.case_sensitive else text.lower()

        phrases = [norm(p) for p in self.config.phrases]
        rows = read_conversations(context.recall("dataset.train"))  # the split's file, one row a line
        hits = []
        for row in rows:
            for message in row["messages"]:
                if message["role"] == "assistant":
                    hits += [p for p in phrases if p in norm(message["content"])]
        context.summarize("banned_phrase_hits", len(hits))
        if hits:
            raise ReviewFailed(f"{len(hits)} assistant replies contain banned phrases: {sorted(set(hits))}")
        return f"no banned phrase in {len(rows)} rows"
