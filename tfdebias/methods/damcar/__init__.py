"""DAMCAR (Lin et al., "Mitigating Sample Selection Bias with Robust Domain
Adaption in Multimedia Recommendation", ACM MM 2024) and its baselines on a two-stage
cascade (DSSM retrieval -> DeepFM / DCN ranking).

Three modules (Sec. 4, Fig. 2):

1. **Target domain generation** (Eq. (1)-(3)): :mod:`tfdebias.data.random_walk`
   draws the hard-to-distinguish unexposed pairs ``S_sam`` by random walks on the
   watch-time-weighted user-item exposure graph.
2. **Robust pseudo-label generation** (Eq. (4)-(11)): :class:`LabelGenerator`, the
   ``label_generator``: a shared encoder ``E`` (MLP 300-200-100), a transform ``g``
   (MLP 128-100) used on source (exposed) samples only, a label head ``Phi`` and a
   ``domain_classifier`` ``Psi`` behind a gradient reversal layer, plus an
   ``ema_teacher`` (Eq. (9), alpha = 0.99) that supervises the student on the target
   domain (Eq. (10)). All loss terms come from :func:`label_generator_losses`.
3. **Hybrid training** (Eq. (12)-(17)): :class:`HybridRetrieval`, a DSSM two-tower
   retriever trained on ``S_exp u S_sam`` with the modified pseudo-labels ``y_mpl``
   (:func:`modified_pseudo_labels`, Eq. (12)) and distilled from the pre-trained
   ranker's scores (Eq. (16)). All loss terms come from :func:`retrieval_losses`,
   which every baseline and ablation shares (BC, KD, TL, AR, MUDA; w/o TDG, w/o EMA,
   w/o MPL differ only in the rows, the targets and the weights they feed it).

The ``cascade`` evaluation protocol (:func:`cascade_protocol`, per-user values from
:func:`cascade_eval`) retrieves the top-K of the whole item corpus with the retriever
(R/P/F@100, 200), lets the ranker re-rank the candidates and keeps the top K/10
(N/M/H@10, 20), against every held-out positive: exposed test positives *and* the
simulator's oracle positives that the logging policy never showed; recall is also
reported on each group apart (``/exposed``, ``/unexposed``). Users are scored in blocks
with a streamed top-K.

``tfdebias reproduce damcar`` writes an evidence table
(:func:`tfdebias.evaluation.evidence.write_evidence`): data seeds x model seeds, BC as
floor and main baseline, BC's retriever on the simulator's ``train_unbiased`` as
skyline, popularity / item-kNN and the true relevance as references, a fixed number of
optimizer steps per row (:class:`Budget`).

Choices where the paper is silent or ambiguous (also in ``docs/methods/damcar.md``):

* R, H, v_ui: see :mod:`tfdebias.data.random_walk` (authors' code: H walks of R hops).
* Pseudo-labels (Eq. (5), (12)): the student's soft outputs; source rows get
  ``Phi(g(E(x)))``, target rows ``Phi(E(x))`` as Eq. (5) prints it (default,
  ``Settings.target_label_path="target"``). The authors' code labels target rows through
  ``g`` as well (``"source"``). Note that with the printed reading ``Phi`` sees
  un-transformed ``z`` only through ``L_sup``, whose teacher is the same path.
* Eq. (8) is trained on both domains (the authors' code loses the target term to a
  bug, ``official_code_notes.md`` §2.2); the GRL scale is 1 and ``lambda2`` weights the
  loss, so ``Psi`` minimises ``lambda2 L_dom`` while ``E``/``g`` receive ``-lambda2``
  times its gradient: Eq. (11)'s ``- lambda2 L_dom``.
* Heads: ``Phi`` and ``Psi`` are each ``Dense(1)`` + sigmoid (Sec. 5.1.5, "single-layer
  MLP with the Sigmoid").
* The teacher is a full copy of the student (embeddings included), initialised from it
  before the first step and updated after every optimizer step (authors' code).
* DSSM: towers 300-300-128 (authors' code; the paper's "dimension 128"), field
  embeddings 32-d, cosine times a temperature plus a bias; item tower = item-side
  features (id, author, content vectors, duration), user tower = user id.
* Dense scalars (``duration``) are min-max scaled with the training split's range
  (authors: MinMaxScaler), for every model alike; exports expect scaled inputs.
* Baselines TL, AR and MUDA use the same unexposed rows ``S_sam`` as DAMCAR, so the
  comparison isolates the labels; MUDA binarises ranker scores at 0.5.
* The paper's Table 4 grid is lambda1 in {0.5, ..., 0.9}, lambda2, lambda3 in
  {0.1, ..., 0.5}; registered with the tuner as :data:`SEARCH_SPACE`.

Layout: :mod:`.losses` (every loss term), :mod:`.model` (the registered models),
:mod:`.data` (features, item table, target domain, hybrid training set), :mod:`.train`
(budget, fitting, :func:`run_seed`), :mod:`.protocol` (the ``cascade`` protocol and the
reference scorers), :mod:`.export` (:func:`export_cascade`) and :mod:`.reproduce`
(``tfdebias reproduce damcar``). Every public name is re-exported here.
"""

from tfdebias.methods.damcar.data import (CascadeData, hybrid_columns, item_side_names,
                                          prepare_cascade, target_domain)
from tfdebias.methods.damcar.export import export_cascade
from tfdebias.methods.damcar.losses import (DOMAIN, ITEM, RANK, TARGET, USER, WEIGHT,
                                            label_generator_losses, modified_pseudo_labels,
                                            retrieval_losses)
from tfdebias.methods.damcar.model import ADANetwork, HybridRetrieval, LabelGenerator
from tfdebias.methods.damcar.protocol import (GROUPS, ITEM_KNN, POPULARITY, EvalSet,
                                              cascade_eval, cascade_protocol, eval_set,
                                              mean_metrics, retriever_scorer, simple_scorers,
                                              truth_scorer)
from tfdebias.methods.damcar.reproduce import (GROUP_KEYS, HEADLINE, METRIC_ORDER, PAPER_RH,
                                               QUICK_ROWS, SEARCH_SPACE, SHOWN, TRUTH,
                                               plot_prediction_distribution, plot_sweep,
                                               run_reproduce)
from tfdebias.methods.damcar.train import (ABLATIONS, METHODS, SKYLINE, WITH_LABEL_GENERATOR,
                                           Budget, Settings, ranker_scores, run_seed,
                                           train_label_generator, train_ranker,
                                           train_retrieval)

__all__ = [
    "ABLATIONS", "ADANetwork", "Budget", "CascadeData", "DOMAIN", "EvalSet", "GROUPS",
    "GROUP_KEYS", "HEADLINE", "HybridRetrieval", "ITEM", "ITEM_KNN", "LabelGenerator",
    "METHODS", "METRIC_ORDER", "PAPER_RH", "POPULARITY", "QUICK_ROWS", "RANK", "SEARCH_SPACE",
    "SHOWN", "SKYLINE", "Settings", "TARGET", "TRUTH", "USER", "WEIGHT",
    "WITH_LABEL_GENERATOR", "cascade_eval", "cascade_protocol", "eval_set", "export_cascade",
    "hybrid_columns", "item_side_names", "label_generator_losses", "mean_metrics",
    "modified_pseudo_labels", "plot_prediction_distribution", "plot_sweep", "prepare_cascade",
    "ranker_scores", "retrieval_losses", "retriever_scorer", "run_reproduce",
    "run_seed", "simple_scorers", "target_domain", "train_label_generator", "train_ranker",
    "train_retrieval", "truth_scorer",
]
