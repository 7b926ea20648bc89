"""Custom-code files that `sdbert export --format hf` writes beside the weights.

`configuration_sdbert.py` and `modeling_sdbert.py` are copied as they are into the exported
folder, and `config.json`'s `auto_map` names their classes, so that plain `transformers` loads
any sdbert model with `trust_remote_code=True` (the hub's custom-code convention). They import
only `torch` and `transformers`, never `sdbert`: the folder must work where sdbert is not
installed. Their block-sparse attention is a copy of the pure-PyTorch reference path of
`sdbert.attention` (`tests/test_export_remote.py` checks that the two agree).
"""

REMOTE_CODE_FILES = ("configuration_sdbert.py", "modeling_sdbert.py")
AUTO_MAP = {
    "AutoConfig": "configuration_sdbert.SDBertConfig",
    "AutoModel": "modeling_sdbert.SDBertModel",
    "AutoModelForSequenceClassification": "modeling_sdbert.SDBertForSequenceClassification",
}
