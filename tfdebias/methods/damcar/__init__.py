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
reported on each group apart (``/exposed``, ``/unexposed``) and, where the truth is
known, on each user's true top-50 never-shown items (``/true_top``,
:func:`add_true_top`: a graded group over the whole corpus). Users are scored in blocks
with a streamed top-K.

``tfdebias reproduce damcar`` writes an evidence table
(:func:`tfdebias.evaluation.evidence.write_evidence`) on recall@100 of the never-shown
positives: data seeds x model seeds; BC as floor and main baseline; the skyline is the
oracle-label row (:data:`ORACLE`: DAMCAR's hybrid training with every pseudo-label
replaced by the true P(finish), the ceiling of better labels); "S_sam as 0"
(:data:`SSAM_ZERO`: the unexposed rows labelled negative, what the paper argues against)
and BC on the simulator's uniform log as baselines; popularity / item-kNN and the true
relevance as references; a fixed number of optimizer steps per row (:class:`Budget`).
Each row that makes pseudo-labels reports their AUC against the truth on ``S_sam``
(:func:`soft_auc`).

Choices where the paper is silent or ambiguous, or where we depart from it (also in
``docs/methods/damcar.md``), each with its reason:

* R, H, v_ui: see :mod:`tfdebias.data.random_walk` (authors' code: H walks of R hops).
* **Target labels through g** (Eq. (5), (10), (12)): the student's soft outputs; source
  rows get ``Phi(g(E(x)))`` and, by default, target rows too
  (``Settings.target_label_path="source"``), as the authors' code does. Eq. (5) as
  printed (``Phi(E(x))``, ``"target"``) is an option: that head is trained only by
  Eq. (10) against an EMA copy of the same path, never by a label, so its labels are a
  random projection (AUC 0.50 against the truth, measured). Eq. (10)'s teacher reads
  the same path as the labels.
* **Reversal warm-up** (Eq. (8), (11)): the GRL's scale follows Ganin & Lempitsky's
  ``2 / (1 + exp(-10 p)) - 1`` over the label generator's steps, from 0 at the first step
  to 1 at the last (:func:`grl_schedule`; ``--no-grl-warmup`` for full scale from step 0).
  ``lambda2`` weights the loss, so ``Psi`` minimises ``lambda2 L_dom`` while ``E``/``g``
  receive ``-scale * lambda2`` times its gradient: Eq. (11)'s ``- lambda2 L_dom``. Eq. (8)
  is trained on both domains (the authors' code loses the target term to a bug;
  ``domain_target_term=False`` reproduces it). ``domain_through_g`` applies ``g`` on both
  domains in Eq. (7) (an option; the printed ``Psi(z^t)`` compares two spaces).
* **Psi reads the unit-normalised representation**: with Adam, a linear ``Psi`` on
  unbounded ReLU features lets the encoder maximise ``L_dom`` by growing the features,
  which saturated every pseudo-label within 250 steps (to 1.0 at ``lambda2 = 0.2``, AUC
  0.50, warm-up or not; to 0.0 at 0.05, AUC 0.41); normalised, the label path keeps its
  signal (AUC against the truth on ``S_sam`` 0.50 -> 0.61, measured on
  ``cascade_exposure/communities``).
* **EMA rate from the step count** (Eq. (9)): ``alpha = min(0.99, 1 - 10 / steps)``
  (:func:`auto_alpha`; 0.96 at the quick budget's 250 steps, the paper's 0.99 at its
  ~6k), and mean teacher's ramp ``min(alpha, 1 - 1/(t + 1))``: at 0.99 for ~220 steps
  the teacher kept ~11% of its random initial weights.
* Heads: ``Phi`` and ``Psi`` are each ``Dense(1)`` + sigmoid (Sec. 5.1.5, "single-layer
  MLP with the Sigmoid").
* The teacher is a full copy of the student (embeddings included), initialised from it
  before the first step and updated after every optimizer step (authors' code).
* DSSM: towers 300-300-128 (authors' code; the paper's "dimension 128"), field
  embeddings 32-d, cosine times a temperature plus a bias; item tower = item-side
  features (id, author, content vectors, duration), user tower = user id. **Temperature
  5**, not the authors' 1 (``--temperature 1``): at 1 the logits are capped at
  ``b +- 1`` and BC's recall of the never-shown positives drops from 0.100 to 0.076
  (measured, ``communities``).
* **Optimizer**: Adam at 1e-3 for every model (the paper: AdaGrad 1e-2 over ~6k steps).
  At the evidence budget AdaGrad left the DSSM at a popularity-like solution (BC's
  recall of never-shown positives 0.048 vs 0.100 with Adam) and the ranker at test AUC
  0.655 vs 0.743 (:class:`Budget`).
* **Ranker**: DeepFM (or DCN) with L2 1e-5 on embeddings and DNN kernels, early-stopped
  on the valid log loss (checked 10 times over its step budget, best weights kept),
  with duration **log-scaled** (``log1p`` then min-max with the train range, for every
  model alike; the authors min-max scale the raw seconds, which crowds a log-normal
  duration near 0). ``CascadeData.scaling`` records what was applied;
  :func:`export_cascade` puts it inside the SavedModels (a client sends raw features).
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
from tfdebias.methods.damcar.export import (export_cascade, scale_features,
                                            unscale_features)
from tfdebias.methods.damcar.losses import (DOMAIN, ITEM, RANK, TARGET, USER, WEIGHT,
                                            label_generator_losses, modified_pseudo_labels,
                                            retrieval_losses)
from tfdebias.methods.damcar.model import (ADANetwork, HybridRetrieval, LabelGenerator,
                                           grl_schedule)
from tfdebias.methods.damcar.protocol import (GROUPS, ITEM_KNN, POPULARITY, TRUE_TOP, EvalSet,
                                              add_true_top, cascade_eval, cascade_protocol,
                                              eval_set, mean_metrics, retriever_scorer,
                                              simple_scorers, truth_model, truth_scorer)
from tfdebias.methods.damcar.reproduce import (GROUP_KEYS, HEADLINE, METRIC_ORDER, PAPER_RH,
                                               QUICK_ROWS, SEARCH_SPACE, SHOWN, TRUTH,
                                               plot_prediction_distribution, plot_sweep,
                                               run_reproduce)
from tfdebias.methods.damcar.train import (ABLATIONS, METHODS, ORACLE, SKYLINE, SSAM_ZERO,
                                           WITH_LABEL_GENERATOR, Budget, Settings, auto_alpha,
                                           item_rule_aucs,
                                           ranker_scores, run_seed, soft_auc,
                                           train_label_generator, train_ranker,
                                           train_retrieval)

__all__ = [
    "ABLATIONS", "ADANetwork", "Budget", "ORACLE", "SSAM_ZERO", "TRUE_TOP", "add_true_top",
    "auto_alpha", "grl_schedule", "item_rule_aucs", "scale_features", "unscale_features",
    "soft_auc", "truth_model", "CascadeData", "DOMAIN", "EvalSet", "GROUPS",
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
