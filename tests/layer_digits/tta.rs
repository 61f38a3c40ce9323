//! Test-time augmentation (`tta::classify`): one view is the plain classification, views are
//! seeded and small, and averaging them keeps a trained model's accuracy.

use std::path::Path;

use image::GrayImage;
use kiln::data::mnist::{Dataset, DatasetKind};
use kiln::evaluate::argmax;
use kiln::testing::gpu;
use kiln::{tta, Classifier};

use crate::common;

#[test]
fn tta_views_are_seeded_small_warps_and_keep_the_accuracy() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/mnist");
    let test = Dataset::load(DatasetKind::Mnist10k, Some(Path::new(data))).unwrap().test;
    let images: Vec<GrayImage> = (0..300).map(|i| GrayImage::from_raw(28, 28, test.images.image(i).unwrap().to_vec()).unwrap()).collect();
    let gpu = gpu();
    let mut classifier = Classifier::load(gpu, &common::trained("cnn")).unwrap();
    let plain = classifier.classify(&images).unwrap();
    assert_eq!(tta::classify(&mut classifier, &images, 1, 7).unwrap(), plain, "one view is the digit itself");
    // a view is a function of (seed, image, view), moves the digit, and keeps its ink
    let v = tta::view(&images[0], 7, 0, 1);
    assert_eq!(v, tta::view(&images[0], 7, 0, 1));
    assert_ne!(v, tta::view(&images[0], 7, 0, 2));
    assert_ne!(v, tta::view(&images[0], 8, 0, 1));
    assert_ne!(v, images[0]);
    let ink = |g: &GrayImage| g.as_raw().iter().map(|&p| p as f64).sum::<f64>();
    assert!((ink(&v) / ink(&images[0]) - 1.0).abs() < 0.2, "a small warp keeps the ink");
    let averaged = tta::classify(&mut classifier, &images, 8, 7).unwrap();
    assert_eq!(averaged.len(), 300);
    assert!(averaged.iter().all(|p| (p.iter().sum::<f32>() - 1.0).abs() < 1e-4), "means of probabilities sum to 1");
    let correct = |probs: &[[f32; 10]]| probs.iter().zip(&test.labels).filter(|(p, &l)| argmax(&p[..]) == l as usize).count();
    let (a, b) = (correct(&plain), correct(&averaged));
    println!("300 mnist10k test digits: plain {a}, 8 views {b}");
    assert!(b + 6 >= a, "8 small views lost more than 2% of 300 digits: {a} -> {b}");
    assert!(tta::classify(&mut classifier, &images, 0, 7).unwrap_err().to_string().contains("expected 1 to 64"));
    // what evaluate --tta reads with: an ensemble of one with its views
    let mut one = kiln::classify::Ensemble::from(classifier).with_views(8, 7).unwrap();
    assert_eq!(one.classify(&images).unwrap(), averaged);
    assert!(one.with_views(0, 7).err().expect("0 views taken").to_string().contains("--tta"));
}
