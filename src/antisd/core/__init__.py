"""antisd.core: the method as small pure tensor functions.

Imports only torch and the standard library; nothing above it in the package is imported here
(see docs/architecture.md). Shapes are suffixed: B sequences, T response tokens, V vocabulary, G group size.
"""

from antisd.core.advantages import COMPOSERS, compose_additive, compose_multiplicative, group_advantages, term_dose_sums
from antisd.core.gate import SchmittGate
from antisd.core.logprobs import logp_entropy_from_hidden, logp_entropy_from_logits
from antisd.core.masked import masked_mean, masked_median, masked_std, masked_sum
from antisd.core.shaping import (
    SigmaRef,
    paper_signal,
    release_signal,
    sequence_ppl,
    sequence_zscore,
    teacher_ppl_lambda,
    zero_outliers,
)
from antisd.core.signals import LN2, SIGNALS, get_signal, jsd_phi, register_signal, token_pmi

__all__ = [
    "COMPOSERS",
    "LN2",
    "SIGNALS",
    "SchmittGate",
    "SigmaRef",
    "compose_additive",
    "compose_multiplicative",
    "get_signal",
    "group_advantages",
    "jsd_phi",
    "logp_entropy_from_hidden",
    "logp_entropy_from_logits",
    "masked_mean",
    "masked_median",
    "masked_std",
    "masked_sum",
    "paper_signal",
    "register_signal",
    "release_signal",
    "sequence_ppl",
    "sequence_zscore",
    "teacher_ppl_lambda",
    "term_dose_sums",
    "token_pmi",
    "zero_outliers",
]
