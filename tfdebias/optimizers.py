"""Optimizers whose embedding-table updates touch only the rows a batch uses.

A CTR model's parameters are almost all embedding rows (26 fields x 10,000 ids x 17
floats = 4.42M in the throughput benchmark's DeepFM, against 0.14M dense weights).
Keras 3's :class:`keras.optimizers.Adam` receives the embedding gradient as a
``tf.IndexedSlices`` (only the looked-up rows), but densifies it: every step reads
and writes every row of every table, and of both slot variables, although a batch
of 1,024 rows touches at most 1,024 ids per field (about 400 distinct ones in the
benchmark). That is what makes a plain Keras 3 DeepFM with Adam no faster than
DeepCTR. (It also squares each duplicate id's gradient separately, so ``v`` gets
``g1**2 + g2**2`` where Adam on the summed gradient has ``(g1 + g2)**2``.) The
optimizers here keep the update sparse, and sum duplicates first:

* :class:`LazyAdam` -- Adam whose moment estimates and variable are updated only on
  the rows present in the batch (the "lazy" Adam of TF-Addons
  ``tfa.optimizers.LazyAdam`` and of industrial CTR trainers). On dense gradients it
  *is* Keras Adam, to the last bit.
* :class:`SparseAdagrad` -- AdaGrad that gathers and scatters only the touched rows.
  Rows without gradient would not change under dense AdaGrad either, so this is exact
  AdaGrad; it also sums duplicate ids before squaring, which Keras 3's own Adagrad
  does not do for ``IndexedSlices`` (it accumulates ``g1**2 + g2**2`` instead of
  ``(g1 + g2)**2`` when one id occurs twice in a batch).

Adam update (Kingma & Ba, 2015, Algorithm 1), for step ``t`` (1-based, the optimizer's
global step) and gradient ``g``::

    m_t = beta_1 * m_{t-1} + (1 - beta_1) * g
    v_t = beta_2 * v_{t-1} + (1 - beta_2) * g**2
    theta_t = theta_{t-1} - lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
                                * m_t / (sqrt(v_t) + epsilon)

:class:`LazyAdam` applies these three lines to the rows ``r`` with a gradient in this
batch (after summing the gradient of duplicate ids, as ``tf.IndexedSlices`` means),
and leaves every other row of ``theta``, ``m`` and ``v`` as it is. The bias correction
uses the *global* step ``t``, not a per-row count, exactly as TF-Addons' LazyAdam
does. The difference from Adam is therefore only on rows absent from a batch: Adam
would still decay their ``m``/``v`` and move ``theta`` by the decayed momentum; lazy
Adam does not.

Which optimizer to use: :func:`make_optimizer` takes ``"adam"`` (standard Keras
Adam), ``"lazy_adam"``, ``"adagrad"`` (:class:`SparseAdagrad`) and ``"sgd"``.
**The default for CTR training is** ``"lazy_adam"`` (:data:`DEFAULT_CTR_OPTIMIZER`):
the per-step cost of the embedding update is proportional to the batch, not to the
vocabulary. On the ``benchmarks/ctr_throughput.py`` DeepFM workload (2 CPU cores) it
trains faster than Keras Adam and reaches a higher validation AUC (0.675 against 0.653;
figures in ``benchmarks/README.md``). Use ``"adam"`` to
reproduce a paper that trained with dense Adam, or for models without large
embedding tables (there the two are identical anyway).

Limitations: weight decay, EMA and gradient accumulation are Keras' dense
implementations (accumulated gradients are dense, so with
``gradient_accumulation_steps`` the update is dense Adam). ``clipvalue`` densifies
the gradient (Keras' ``ops.clip``); ``clipnorm`` keeps it sparse. These sparse paths
need the TensorFlow backend (``tf.IndexedSlices``), the only one tfdebias supports.

Example:

>>> import keras
>>> from tfdebias.optimizers import make_optimizer
>>> opt = make_optimizer("lazy_adam", 1e-3)
>>> type(opt).__name__, float(opt.learning_rate)
('LazyAdam', 0.0010000000474974513)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfdebias.errors import UsageError

__all__ = [
    "LazyAdam",
    "SparseAdagrad",
    "distinct_slices",
    "gather_rows",
    "sum_duplicates",
    "summing_matrix",
    "make_optimizer",
    "OPTIMIZERS",
    "DEFAULT_CTR_OPTIMIZER",
]

#: The optimizer CTR training uses unless told otherwise (see the module docstring).
DEFAULT_CTR_OPTIMIZER = "lazy_adam"


#: Attribute that marks a ``tf.IndexedSlices`` whose indices are already distinct
#: and whose values are already summed per index (see :func:`distinct_slices`).
_DISTINCT = "_tfdebias_distinct"


def distinct_slices(values, indices, dense_shape) -> tf.IndexedSlices:
    """A ``tf.IndexedSlices`` that promises distinct ``indices``.

    A lookup that deduplicates its ids itself (``FeatureEmbedding`` sums the gradient
    of repeated ids in its backward pass) returns its gradient this way, and the sparse
    optimizers here then skip their own ``unique`` + sum. The promise is an attribute
    of this Python object only: anything that builds a new ``IndexedSlices`` from it
    (a gradient tape adding two lookups of one variable, clipping, loss scaling, an
    all-reduce across replicas) drops it, and the optimizer deduplicates again, so a
    broken promise cannot reach an update.
    """
    slices = tf.IndexedSlices(values, indices, dense_shape)
    setattr(slices, _DISTINCT, True)
    return slices


def summing_matrix(position, n_unique, dtype=tf.float32):
    """The (unique x n) 0/1 ``tf.SparseTensor`` with a 1 at ``(position[j], j)``.

    Multiplying it with ``n`` rows sums the rows of each id (``position`` is the
    second output of ``tf.unique``, ``n_unique`` the size of its first). ``None`` where
    :func:`sum_duplicates` takes the segment sum instead (XLA, non-float dtypes).
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.float64) or _in_xla():
        return None
    n = tf.size(position, out_type=tf.int64)
    return tf.sparse.SparseTensor(
        tf.stack([tf.cast(position, tf.int64), tf.range(n)], axis=1),
        tf.ones(tf.reshape(n, [1]), dtype), tf.stack([tf.cast(n_unique, tf.int64), n]))


def sum_duplicates(values, position, n_unique, matrix=None):
    """Rows of ``values`` summed by ``position``: ``out[k] = sum(values[position == k])``.

    On CPU this is a product with :func:`summing_matrix` (pass it as ``matrix`` if it
    is already built): TF's sparse-dense matmul does it about twice as fast as
    ``unsorted_segment_sum`` (1.2 against 2.2 ms for 26,624 rows of width 16, the
    ctr_throughput benchmark's batch), with the same sums. Integer dtypes and XLA
    (which has no sparse matmul) take the segment sum.
    """
    if matrix is None:
        matrix = summing_matrix(position, n_unique, values.dtype)
    if matrix is None or matrix.dtype != values.dtype:
        return tf.math.unsorted_segment_sum(values, position, n_unique)
    n = tf.shape(values, out_type=tf.int64)[0]
    summed = tf.sparse.sparse_dense_matmul(matrix, tf.reshape(values, tf.stack([n, -1])))
    shape = tf.concat([matrix.dense_shape[:1], tf.shape(values, out_type=tf.int64)[1:]], 0)
    return tf.reshape(summed, shape)


def _dedup(gradient: tf.IndexedSlices, dtype):
    """Sum the values of duplicate indices: ``(unique_indices, summed_values)``.

    This is what an ``IndexedSlices`` means (``tf.convert_to_tensor`` adds duplicate
    rows), and what a sparse update must use before any non-linear step such as
    squaring the gradient. Slices from :func:`distinct_slices` are already summed.
    """
    values = tf.cast(gradient.values, dtype)
    if getattr(gradient, _DISTINCT, False):
        return gradient.indices, values
    unique, position = tf.unique(gradient.indices)
    return unique, sum_duplicates(values, position, tf.shape(unique)[0])


def _in_xla() -> bool:
    """True while tracing for XLA (``jit_compile=True``), which has no sparse matmul."""
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def gather_rows(variable, indices):
    """Rows of a (Keras, TF or distributed) variable.

    ``tf.gather`` reads a ``ResourceVariable`` with a sparse ``ResourceGather`` (no
    copy of the table); a distributed variable, which has no ``sparse_read``, is read
    on the replica being updated.
    """
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return tf.gather(variable, indices)


def _scatter(optimizer, variable, rows, indices):
    """``variable[indices] = rows`` (indices unique)."""
    optimizer.assign(variable, tf.IndexedSlices(rows, indices))


@keras.saving.register_keras_serializable(package="tfdebias")
class LazyAdam(keras.optimizers.Adam):
    """Adam that updates embedding rows, and their moments, only where a batch has them.

    Same arguments, defaults and ``get_config`` as :class:`keras.optimizers.Adam`.
    For a ``tf.IndexedSlices`` gradient (what an embedding lookup produces) it sums
    the gradients of duplicate ids (already done for :func:`distinct_slices`, which
    ``FeatureEmbedding`` produces while training), gathers ``m``, ``v`` (and ``v_hat`` with
    ``amsgrad``) at those rows, applies Adam's update there (module docstring, with
    the global step for bias correction, like TF-Addons' ``LazyAdam``) and scatters
    the rows back. Untouched rows of the variable and of its slots keep their values.
    For a dense gradient it runs :meth:`keras.optimizers.Adam.update_step` unchanged.

    Example:

    >>> import numpy as np, keras
    >>> inputs = keras.Input((3,), dtype="int32")
    >>> x = keras.layers.Flatten()(keras.layers.Embedding(100, 4)(inputs))
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(x))
    >>> model.compile(LazyAdam(1e-3), "mse")
    >>> ids = np.random.randint(0, 100, (64, 3))
    >>> model.fit(ids, np.zeros((64, 1)), verbose=0).history["loss"][0] >= 0
    True
    """

    def __init__(self, learning_rate=0.001, name="lazy_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)

    # Scalars shared by every table in one update pass (computed once, not once per
    # variable: a CTR model has dozens of tables). The pass is Keras' TF-backend
    # `_distributed_tf_update_step`, which runs once per step, also under a
    # tf.distribute strategy (in its merge call); if a Keras version lacks it the
    # cache stays off and each variable computes its own, as Adam does.
    _step_cache = None

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        self._step_cache = {}
        try:
            return super()._distributed_tf_update_step(
                distribution, grads_and_vars, learning_rate
            )
        finally:
            self._step_cache = None

    def _sparse_scalars(self, dtype, learning_rate):
        cache = self._step_cache
        if cache is not None and dtype in cache:
            return cache[dtype]
        # Same expressions, in the same order, as keras.optimizers.Adam.update_step,
        # so a touched row comes out bit-identical to dense Adam's.
        lr = tf.cast(learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1_power = tf.pow(tf.cast(self.beta_1, dtype), local_step)
        beta_2_power = tf.pow(tf.cast(self.beta_2, dtype), local_step)
        scalars = (
            lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power),  # alpha
            tf.cast(1 - self.beta_1, dtype),
            tf.cast(1 - self.beta_2, dtype),
            tf.cast(self.epsilon, dtype),
        )
        if cache is not None:
            cache[dtype] = scalars
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)

        dtype = variable.dtype
        indices, grad = _dedup(gradient, dtype)
        alpha, one_minus_beta_1, one_minus_beta_2, epsilon = self._sparse_scalars(
            dtype, learning_rate
        )
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        m_rows = gather_rows(m, indices)
        v_rows = gather_rows(v, indices)
        m_rows = m_rows + (grad - m_rows) * one_minus_beta_1
        v_rows = v_rows + (tf.square(grad) - v_rows) * one_minus_beta_2
        _scatter(self, m, m_rows, indices)
        _scatter(self, v, v_rows, indices)
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            v_rows = tf.maximum(gather_rows(v_hat, indices), v_rows)
            _scatter(self, v_hat, v_rows, indices)
        step = (m_rows * alpha) / (tf.sqrt(v_rows) + epsilon)
        # Gather + scatter-assign: same arithmetic as scatter_sub, and TF's CPU
        # scatter-assign kernel is about twice as fast as its scatter-subtract.
        _scatter(self, variable, gather_rows(variable, indices) - step, indices)


@keras.saving.register_keras_serializable(package="tfdebias")
class SparseAdagrad(keras.optimizers.Adagrad):
    """AdaGrad (Duchi et al., 2011) that touches only the rows a batch has.

    ``acc += g**2; theta -= lr * g / sqrt(acc + epsilon)`` (Keras' form of the update).
    For a ``tf.IndexedSlices`` gradient, duplicate ids are summed first, then the two
    lines are applied to the touched rows only. Untouched rows have ``g = 0``, for
    which dense AdaGrad changes nothing either, so the result equals AdaGrad on the
    dense gradient. Same arguments and ``get_config`` as
    :class:`keras.optimizers.Adagrad`; dense gradients take its ``update_step``.
    """

    def __init__(self, learning_rate=0.001, name="sparse_adagrad", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        indices, grad = _dedup(gradient, dtype)
        lr = tf.cast(learning_rate, dtype)
        acc = self._accumulators[self._get_variable_index(variable)]
        acc_rows = gather_rows(acc, indices) + tf.square(grad)
        _scatter(self, acc, acc_rows, indices)
        step = (lr * grad) / tf.sqrt(acc_rows + tf.cast(self.epsilon, dtype))
        _scatter(self, variable, gather_rows(variable, indices) - step, indices)


#: Names accepted by :func:`make_optimizer`.
OPTIMIZERS = ("adam", "lazy_adam", "adagrad", "sgd")


def make_optimizer(name: str = DEFAULT_CTR_OPTIMIZER, learning_rate: float = 1e-3, **kwargs):
    """A fresh optimizer by name.

    Args:
      name: ``"adam"`` (standard :class:`keras.optimizers.Adam`, dense updates),
        ``"lazy_adam"`` (:class:`LazyAdam`; the CTR default, see the module
        docstring), ``"adagrad"`` (:class:`SparseAdagrad`) or ``"sgd"``
        (:class:`keras.optimizers.SGD`, whose plain update of an ``IndexedSlices``
        gradient already touches only the batch's rows).
      learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule``.
      **kwargs: passed to the optimizer (``beta_1``, ``clipnorm``, ``momentum`` ...).

    Raises:
      tfdebias.errors.UsageError: for an unknown name or a non-positive rate.
    """
    key = str(name).lower().replace("-", "_")
    classes = {
        "adam": keras.optimizers.Adam,
        "lazy_adam": LazyAdam,
        "adagrad": SparseAdagrad,
        "sgd": keras.optimizers.SGD,
    }
    if key not in classes:
        raise UsageError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    if isinstance(learning_rate, (int, float)):
        if not learning_rate > 0:
            raise UsageError(f"learning_rate must be > 0, got {learning_rate!r}")
        learning_rate = float(learning_rate)
    try:
        return classes[key](learning_rate=learning_rate, **kwargs)
    except (TypeError, ValueError) as e:  # an argument it does not take or accept
        raise UsageError(f"optimizer {key!r}: {e}") from None
