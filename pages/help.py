"""Help page: what deep support vectors are and how to read the app's numbers, for a classroom.

Text and the paper's equations only (Lee et al., "Deep Support Vectors"); no model is loaded.
The trust thresholds are read off :func:`dsvlib.synthesize.trust_strength`, never typed in here.
"""
from __future__ import annotations

import streamlit as st

from dsvlib.cards import trust_thresholds

INTRO = (
    "A trained classifier remembers more about its training data than its accuracy shows. DSV Studio "
    "asks the model itself for the few images that hold up its decisions, much as the support vectors "
    "of a support vector machine (SVM) hold up its separating line. This page explains the ideas and "
    "the numbers you see on the other pages."
)


def help_page() -> None:
    st.title("Help")
    st.markdown(INTRO)
    _what_is_a_dsv()
    _conditions()
    _lambda()
    _trust()
    _entropy()
    _ranking_and_editing()
    _runs_and_models()


def _what_is_a_dsv() -> None:
    st.header("What is a deep support vector?")
    st.markdown(
        "In an SVM, only the training points closest to the boundary between two classes matter: the "
        "**support vectors**. The weights of the SVM are a weighted sum of them, so the support vectors "
        "alone are enough to rebuild the classifier.\n\n"
        "A **deep support vector** (DSV) is the same idea for a deep network. It is an image that meets "
        "the **DeepKKT conditions** below: the network classifies it correctly, and the network's "
        "weights can be written as a weighted sum of the DSVs' gradients. DSV Studio finds DSVs in two "
        "ways: it *synthesises* them from random noise, with no training data at all (Synthesize page), "
        "or it *selects* them among real images (Lambda ranking page)."
    )


def _conditions() -> None:
    st.header("The DeepKKT conditions")
    st.markdown(
        "Write $\\Phi(x; \\theta^*)$ for the network's scores (logits) of an image $x$, $\\theta^*$ for its "
        "trained weights, $L$ for the cross-entropy loss, and $x_i, y_i$ for the candidate images and "
        "their classes. Only the images $x_i$ and their multipliers $\\lambda_i$ change; the model "
        "never does."
    )
    st.subheader("1. Primal feasibility: the model gets it right")
    st.markdown("Each candidate must be classified as its class. The loss is zero for a correct "
                "candidate and the cross-entropy otherwise, like the hinge loss of an SVM (paper Eq. 7):")
    st.latex(r"L_{\text{primal}} = \frac{1}{n}\sum_{i=1}^{n} L_i, \qquad "
             r"L_i = \begin{cases} 0 & \text{if } \arg\max_c \Phi_c(x_i;\theta^*) = y_i \\ "
             r"L\big(\Phi(x_i;\theta^*), y_i\big) & \text{otherwise} \end{cases}")
    st.subheader("2. Stationarity: the weights are a sum of gradients")
    st.markdown("The trained weights should equal a weighted sum of the candidates' loss gradients "
                "(paper Eq. 5), and the loss measures the distance $D$ between the two sides (Eq. 8):")
    st.latex(r"\theta^* = -\sum_{i=1}^{n} \lambda_i \nabla_\theta L\big(\Phi(x_i;\theta^*), y_i\big), "
             r"\qquad L_{\text{stat}} = D\Big(\theta^*,\, -\sum_{i=1}^{n} \lambda_i \nabla_\theta "
             r"L\big(\Phi(x_i;\theta^*), y_i\big)\Big)")
    st.markdown("The paper uses the mean absolute (L1) difference for $D$. In practice that number barely "
                "moves, because the sum of gradients is tiny next to the weights. DSV Studio uses the "
                "**cosine distance** instead, which only compares directions and so does not care about "
                "scale:")
    st.latex(r"D_{\cos}(a, b) = 1 - \frac{a \cdot b}{\lVert a \rVert\, \lVert b \rVert}")
    st.subheader("3. Dual feasibility: multipliers are never negative")
    st.latex(r"\lambda_i \ge 0 \quad \text{for every } i")
    st.subheader("4. Manifold: the images should look like data")
    st.markdown("A random pattern can satisfy the first three conditions and still look like noise. "
                "The paper asks that augmented copies $\\mathcal{A}(x)$ (shifted, cropped, ...) also meet "
                "the conditions, and adds image priors: total variation $L_{\\text{tv}}$ (neighbouring "
                "pixels should be alike) and the norm $L_{\\text{norm}}$ (no extreme pixels) (paper Eq. 9):")
    st.latex(r"\text{DSV} = \arg\min_{x}\; \mathbb{E}_{\mathcal{A}}\Big[L_{\text{stat}}(\mathcal{A}(x)) "
             r"+ \beta_1 L_{\text{primal}}(\mathcal{A}(x)) + \beta_2 L_{\text{tv}}(x) "
             r"+ \beta_3 L_{\text{norm}}(x)\Big]")
    st.caption("DSV Studio's defaults keep the priors but do not augment the candidates inside the "
               "stationarity term: on models trained without augmentation, random copies stopped "
               "stationarity from holding. For digits, an augmented copy only has to keep its class.")


def _lambda() -> None:
    st.header("λ, the Lagrange multiplier")
    st.markdown(
        "Every candidate $x_i$ carries a number $\\lambda_i$: how much its gradient contributes to the sum "
        "that rebuilds the weights. A large λ means the model leans on that image; a λ near zero means "
        "the model could do without it.\n\n"
        "**Why a candidate whose λ goes negative is dropped.** A negative λ would mean the weights point "
        "the way that *raises* that image's loss, as if the model had been trained to get it wrong. "
        "That breaks dual feasibility (λ ≥ 0), so the image is not a support vector. As in the paper's "
        "algorithm (Alg. 1), such a candidate is taken out and shown as \"not kept\"."
    )


def _trust() -> None:
    t = trust_thresholds()
    st.header("Trust: can this model's DSVs be believed?")
    st.markdown(
        "Stationarity only holds for some models. A model trained with SGD and weight decay until it "
        "converges comes close; a model trained with Adam and no weight decay hardly does. DSV Studio "
        "measures this with the **stationarity cosine**: the cosine between $-\\theta^*$ and the "
        "weighted sum of gradients. 1 means the two point the same way; 0 means they are unrelated. "
        "The model card gives it for the real training data; each synthesis run reports the best value "
        "its DSVs reached."
    )
    bands = [
        ("strong", f"cosine {t['strong']:.2f} or more",
         "the DSVs reflect what the model learned."),
        ("partial", f"cosine from {t['partial']:.2f} up to {t['strong']:.2f}",
         "trust the class features the DSVs show, less their fine detail."),
        ("weak", f"cosine below {t['partial']:.2f}",
         "read the DSVs as pictures of each class, not as support vectors."),
    ]
    st.markdown("\n".join(f"- **{name}** ({rule}): {meaning}" for name, rule, meaning in bands))


def _entropy() -> None:
    st.header("The entropy curve")
    st.markdown("The entropy of the model's prediction for an image says how unsure the model is:")
    st.latex(r"H(x) = -\sum_{c} p_c(x) \log p_c(x)")
    st.markdown(
        "It is 0 when the model is certain and largest when every class is equally likely. Support "
        "vectors sit on the boundary between classes, where the model is unsure, so their entropy is "
        "high. In the paper (Fig. 2a) the entropy of the candidates rises during synthesis as they move "
        "towards the boundary. The Synthesize page plots the same curve for your run."
    )


def _ranking_and_editing() -> None:
    st.header("Ranking real images by λ")
    st.markdown(
        "The Lambda ranking page keeps real images fixed and fits only their multipliers λ, so that the "
        "weighted sum of their gradients points along the weights (paper Sec. 5.1). Images with a large λ "
        "are the ones the model relies on most; a small set of them per class can stand in for the full "
        "data. In the paper, the sum of λ over a class also goes with how well the model does on that "
        "class on test data (Fig. 2b)."
    )
    st.header("Editing an image")
    st.markdown(
        "The Edit page starts from a real image instead of noise, gives it another target class and runs "
        "the DeepKKT optimisation from there (paper Fig. 3, bottom). The image gains the features the "
        "model uses for the new class, which shows what the model looks at. A target can also be a mix "
        "of two classes (paper Fig. 6), a soft label:"
    )
    st.latex(r"y = (1 - \delta)\, e_a + \delta\, e_b, \qquad 0 \le \delta \le 1")


def _runs_and_models() -> None:
    st.header("Runs, and your own model")
    st.markdown(
        "- **Runs keep going in the background.** Generate, Fit λ and Run edit start a job on the server; "
        "you can switch pages or change settings while it runs, and its result waits for you. **Stop** ends "
        "a run at its next step and keeps what it has so far, marked as a partial result. One run per "
        "browser tab at a time; when several people share the server, runs queue and the page shows your "
        "place.\n"
        "- **Quick look** gives a first grid in seconds; the **Benchmarked recipe** is slower and is the one "
        "whose quality is measured in BENCHMARKS.md. The time estimate is measured on the device you chose.\n"
        "- **Your own model** (Model page): a `.safetensors` file written by `dsvlib.save_model`; a plain "
        "state_dict (`.pt`, `.pth`, `.safetensors`) with its architecture described in the form; or a "
        "network of **any architecture** exported to ONNX with `torch.onnx.export(..., dynamo=False, "
        "opset_version=17, dynamic_axes={'input': {0: 'batch'}})`. Files are read as data: pickled code "
        "is never run.\n"
        "- **Take-aways**: each result has a zip download with the images as PNGs and their numbers "
        "(λ, class, probability, entropy) in CSV and JSON, with the settings and the model's fingerprint."
    )
