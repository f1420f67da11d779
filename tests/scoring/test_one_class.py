import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import SGDOneClassSVM
from sklearn.metrics import roc_auc_score
from sklearn.svm import OneClassSVM

from anodiff.errors import AnodiffError
from anodiff.scoring.one_class import OneClassModel, fit_one_class, rbf_gamma

RNG = np.random.default_rng(0)
NORMAL = RNG.normal(size=(600, 12))
TEST = np.concatenate([RNG.normal(size=(100, 12)), RNG.normal(2.5, 1.0, size=(100, 12))])
IS_OUTLIER = np.r_[np.zeros(100), np.ones(100)]


def test_gamma_is_the_papers_and_scikit_learns_scale() -> None:
    assert rbf_gamma(NORMAL) == pytest.approx(1 / (12 * NORMAL.var()))


def test_exact_svm_scores_are_minus_scikit_learns_decision_function() -> None:
    model = fit_one_class(NORMAL, "ocsvm", nu=0.1)
    svm = OneClassSVM(kernel="rbf", nu=0.1, gamma="scale").fit(NORMAL)
    expected = -svm.decision_function(TEST)
    assert np.allclose(model.score(torch.from_numpy(TEST)).numpy(), expected, atol=1e-4)


def test_nystroem_svm_scores_match_its_scikit_learn_pipeline() -> None:
    model = fit_one_class(NORMAL, "ocsvm_nystroem", nu=0.1, components=200, seed=3)
    features = Nystroem(kernel="rbf", gamma=rbf_gamma(NORMAL), n_components=200,
                        random_state=3).fit(NORMAL)
    sgd = SGDOneClassSVM(nu=0.1, random_state=3).fit(features.transform(NORMAL))
    expected = -sgd.decision_function(features.transform(TEST))
    assert np.allclose(model.score(torch.from_numpy(TEST)).numpy(), expected, atol=1e-4)


def test_gaussian_score_is_mahalanobis_distance_minus_its_normal_quantile() -> None:
    model = fit_one_class(NORMAL, "gaussian", nu=0.1)
    cov = LedoitWolf().fit(NORMAL)
    boundary = np.quantile(np.sqrt(cov.mahalanobis(NORMAL)), 0.9)
    expected = np.sqrt(cov.mahalanobis(TEST)) - boundary
    assert np.allclose(model.score(torch.from_numpy(TEST)).numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["ocsvm", "ocsvm_nystroem", "gaussian"])
def test_about_nu_of_the_normal_data_lies_outside_and_outliers_score_higher(kind) -> None:
    model = fit_one_class(NORMAL, kind, nu=0.1, components=300)
    outside = float((model.score(torch.from_numpy(NORMAL)) > 0).float().mean())
    assert 0.03 <= outside <= 0.2
    assert roc_auc_score(IS_OUTLIER, model.score(torch.from_numpy(TEST)).numpy()) > 0.95


@pytest.mark.parametrize("kind", ["ocsvm", "ocsvm_nystroem", "gaussian"])
def test_state_round_trip_gives_identical_scores(kind) -> None:
    model = fit_one_class(NORMAL, kind, components=100)
    again = OneClassModel(kind, {k: v.clone() for k, v in model.state_dict().items()})
    z = torch.from_numpy(TEST)
    assert model.fitted and not OneClassModel(kind).fitted
    assert torch.equal(model.score(z), again.score(z))


def test_bad_input_gets_clear_errors() -> None:
    with pytest.raises(AnodiffError, match="unknown one-class"):
        fit_one_class(NORMAL, "svm")
    with pytest.raises(AnodiffError, match="nu"):
        fit_one_class(NORMAL, "ocsvm", nu=1.5)
    with pytest.raises(AnodiffError, match="all equal"):
        fit_one_class(np.ones((10, 3)), "ocsvm")
    with pytest.raises(AnodiffError, match="12-dimensional"):
        fit_one_class(NORMAL, "gaussian").score(torch.zeros(2, 5))
    with pytest.raises(AnodiffError, match="unexpected"):
        OneClassModel("ocsvm", {"location": torch.zeros(3)})
    with pytest.raises(AnodiffError, match="not fitted"):
        OneClassModel("ocsvm").score(torch.zeros(2, 5))
