"""The scikit-learn estimators a pipeline file may name, by kind, so a typo is caught at parse time without sklearn.

Importing scikit-learn costs seconds, too much for every DAG parse; this table is its public
classifiers and regressors (``sklearn.utils.all_estimators``, scikit-learn 1.9), and
``tests/test_authoring.py`` checks it against the installed scikit-learn. Estimators outside
scikit-learn are allowed only by the deployment (``MLOPS_ALLOWED_ESTIMATORS``) and are not looked up here.
"""

from __future__ import annotations

import difflib

from mlops_ops.specs import DEFAULT_ESTIMATORS

CLASSIFIERS: frozenset[str] = frozenset(
    {
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.discriminant_analysis.LinearDiscriminantAnalysis",
        "sklearn.discriminant_analysis.QuadraticDiscriminantAnalysis",
        "sklearn.dummy.DummyClassifier",
        "sklearn.ensemble.AdaBoostClassifier",
        "sklearn.ensemble.BaggingClassifier",
        "sklearn.ensemble.ExtraTreesClassifier",
        "sklearn.ensemble.GradientBoostingClassifier",
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.StackingClassifier",
        "sklearn.ensemble.VotingClassifier",
        "sklearn.gaussian_process.GaussianProcessClassifier",
        "sklearn.linear_model.LogisticRegression",
        "sklearn.linear_model.LogisticRegressionCV",
        "sklearn.linear_model.PassiveAggressiveClassifier",
        "sklearn.linear_model.Perceptron",
        "sklearn.linear_model.RidgeClassifier",
        "sklearn.linear_model.RidgeClassifierCV",
        "sklearn.linear_model.SGDClassifier",
        "sklearn.model_selection.FixedThresholdClassifier",
        "sklearn.model_selection.TunedThresholdClassifierCV",
        "sklearn.multiclass.OneVsOneClassifier",
        "sklearn.multiclass.OneVsRestClassifier",
        "sklearn.multiclass.OutputCodeClassifier",
        "sklearn.multioutput.ClassifierChain",
        "sklearn.multioutput.MultiOutputClassifier",
        "sklearn.naive_bayes.BernoulliNB",
        "sklearn.naive_bayes.CategoricalNB",
        "sklearn.naive_bayes.ComplementNB",
        "sklearn.naive_bayes.GaussianNB",
        "sklearn.naive_bayes.MultinomialNB",
        "sklearn.neighbors.KNeighborsClassifier",
        "sklearn.neighbors.NearestCentroid",
        "sklearn.neighbors.RadiusNeighborsClassifier",
        "sklearn.neural_network.MLPClassifier",
        "sklearn.semi_supervised.LabelPropagation",
        "sklearn.semi_supervised.LabelSpreading",
        "sklearn.semi_supervised.SelfTrainingClassifier",
        "sklearn.svm.LinearSVC",
        "sklearn.svm.NuSVC",
        "sklearn.svm.SVC",
        "sklearn.tree.DecisionTreeClassifier",
        "sklearn.tree.ExtraTreeClassifier",
    }
)

REGRESSORS: frozenset[str] = frozenset(
    {
        "sklearn.compose.TransformedTargetRegressor",
        "sklearn.cross_decomposition.CCA",
        "sklearn.cross_decomposition.PLSCanonical",
        "sklearn.cross_decomposition.PLSRegression",
        "sklearn.dummy.DummyRegressor",
        "sklearn.ensemble.AdaBoostRegressor",
        "sklearn.ensemble.BaggingRegressor",
        "sklearn.ensemble.ExtraTreesRegressor",
        "sklearn.ensemble.GradientBoostingRegressor",
        "sklearn.ensemble.HistGradientBoostingRegressor",
        "sklearn.ensemble.RandomForestRegressor",
        "sklearn.ensemble.StackingRegressor",
        "sklearn.ensemble.VotingRegressor",
        "sklearn.gaussian_process.GaussianProcessRegressor",
        "sklearn.isotonic.IsotonicRegression",
        "sklearn.kernel_ridge.KernelRidge",
        "sklearn.linear_model.ARDRegression",
        "sklearn.linear_model.BayesianRidge",
        "sklearn.linear_model.ElasticNet",
        "sklearn.linear_model.ElasticNetCV",
        "sklearn.linear_model.GammaRegressor",
        "sklearn.linear_model.HuberRegressor",
        "sklearn.linear_model.Lars",
        "sklearn.linear_model.LarsCV",
        "sklearn.linear_model.Lasso",
        "sklearn.linear_model.LassoCV",
        "sklearn.linear_model.LassoLars",
        "sklearn.linear_model.LassoLarsCV",
        "sklearn.linear_model.LassoLarsIC",
        "sklearn.linear_model.LinearRegression",
        "sklearn.linear_model.MultiTaskElasticNet",
        "sklearn.linear_model.MultiTaskElasticNetCV",
        "sklearn.linear_model.MultiTaskLasso",
        "sklearn.linear_model.MultiTaskLassoCV",
        "sklearn.linear_model.OrthogonalMatchingPursuit",
        "sklearn.linear_model.OrthogonalMatchingPursuitCV",
        "sklearn.linear_model.PassiveAggressiveRegressor",
        "sklearn.linear_model.PoissonRegressor",
        "sklearn.linear_model.QuantileRegressor",
        "sklearn.linear_model.RANSACRegressor",
        "sklearn.linear_model.Ridge",
        "sklearn.linear_model.RidgeCV",
        "sklearn.linear_model.SGDRegressor",
        "sklearn.linear_model.TheilSenRegressor",
        "sklearn.linear_model.TweedieRegressor",
        "sklearn.multioutput.MultiOutputRegressor",
        "sklearn.multioutput.RegressorChain",
        "sklearn.neighbors.KNeighborsRegressor",
        "sklearn.neighbors.RadiusNeighborsRegressor",
        "sklearn.neural_network.MLPRegressor",
        "sklearn.svm.LinearSVR",
        "sklearn.svm.NuSVR",
        "sklearn.svm.SVR",
        "sklearn.tree.DecisionTreeRegressor",
        "sklearn.tree.ExtraTreeRegressor",
    }
)

_BY_TASK = {"classification": (CLASSIFIERS, "classifier"), "regression": (REGRESSORS, "regressor")}


def problem(path: str, task: str) -> str | None:
    """Why ``path`` is not a scikit-learn estimator for ``task``, or None when it is (or is not scikit-learn's)."""
    if not path.startswith("sklearn."):
        return None
    known, kind = _BY_TASK[task]
    if path in known:
        return None
    other_known, other_kind = _BY_TASK["regression" if task == "classification" else "classification"]
    if path in other_known:
        return f"{path!r} is a {other_kind}, but the task is {task}; use a {kind} or change 'task'"
    close = difflib.get_close_matches(path, sorted(known), n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]!r}?" if close else f"; e.g. {DEFAULT_ESTIMATORS[task]!r}"
    return f"{path!r} is not a scikit-learn {kind}{hint}"
