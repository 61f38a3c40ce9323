//! Each built-in model's training recipe is its default, and a flag the user gives wins
//! (`train::Recipe`, resolved as `train_mnist` resolves its flags).

use kiln::nn::ModelKind;
use kiln::ops::optim::Rule;
use kiln::train::{Augment, LrSchedule, Recipe, RecipeChoice};

#[test]
fn each_model_resolves_to_its_own_recipe() {
    let none = RecipeChoice::default();
    let bn = Recipe::of(ModelKind::CnnBn).resolve(&none).unwrap();
    assert_eq!(bn.rule, Rule::AdamW { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }, "cnn-bn: README's AdamW 3e-3");
    assert_eq!(bn.lr_schedule, LrSchedule::OneCycle { warmup: 0.3 });
    assert_eq!(bn.label_smoothing, 0.1);
    assert_eq!((bn.augment, bn.epochs), (Augment::Off, 5));
    for model in [ModelKind::Cnn, ModelKind::Mlp, ModelKind::Lenet5] {
        let r = Recipe::of(model).resolve(&none).unwrap();
        assert_eq!(r.rule, Rule::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }, "{}", model.name());
        assert_eq!(r.lr_schedule, LrSchedule::Cosine { hold: 0.8 }, "{}", model.name());
        assert_eq!((r.label_smoothing, r.augment, r.epochs), (0.0, Augment::Off, 5), "{}", model.name());
    }
    let ft = Recipe::FINE_TUNE.resolve(&none).unwrap();
    assert_eq!((ft.augment, ft.epochs), (Augment::Robust, 120));
    assert!(matches!(ft.rule, Rule::Adam { lr, .. } if lr == 3e-4));
}

#[test]
fn an_explicit_choice_wins_over_the_recipe() {
    let bn = Recipe::of(ModelKind::CnnBn);
    let lr = bn.resolve(&RecipeChoice { lr: Some(1e-3), ..Default::default() }).unwrap();
    assert_eq!(lr.rule, Rule::AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }, "--lr alone keeps the rest");
    assert_eq!(lr.label_smoothing, 0.1);
    let flags = RecipeChoice {
        label_smoothing: Some(0.0),
        lr_schedule: Some("constant".into()),
        augment: Some(Augment::Robust),
        epochs: Some(2),
        weight_decay: Some(0.05),
        ..Default::default()
    };
    let r = bn.resolve(&flags).unwrap();
    assert_eq!((r.label_smoothing, r.lr_schedule, r.augment, r.epochs), (0.0, LrSchedule::Constant, Augment::Robust, 2));
    assert!(matches!(r.rule, Rule::AdamW { lr, weight_decay, .. } if lr == 3e-3 && weight_decay == 0.05));
    // another optimizer gets its own defaults, not the recipe's AdamW rate and decay
    let sgd = bn.resolve(&RecipeChoice { optimizer: Some("sgd".into()), momentum: 0.5, ..Default::default() }).unwrap();
    assert_eq!(sgd.rule, Rule::Sgd { lr: 0.01, momentum: 0.5, weight_decay: 0.0 });
    let adam = Recipe::of(ModelKind::Cnn).resolve(&RecipeChoice { optimizer: Some("adamw".into()), ..Default::default() }).unwrap();
    assert_eq!(adam.rule, Rule::AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 });
    let bad = bn.resolve(&RecipeChoice { optimizer: Some("lion".into()), ..Default::default() }).unwrap_err().to_string();
    assert!(bad.contains("lion: expected adam, adamw or sgd"), "{bad}");
}
