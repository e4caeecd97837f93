//! Deterministic sample data in the brief's shape: the same record count and
//! seed always give byte-identical files, so timings and tests can be
//! repeated on another machine.
//!
//! Files are written row by row; the generator holds no more than one row,
//! so a million records per file cost no more memory than a thousand.
//! Rentals are unique `(product_id, user_id)` pairs by construction (the
//! store keys rentals on the pair): customer `u` rents two different
//! products, for the first half of the customers.

use hpn_common::{Customer, Product, Record, RecordKind, Rental};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io;
use std::path::{Path, PathBuf};

pub const DEFAULT_SEED: u64 = 20_261_123;

const FIRST: [&str; 16] = [
    "Ada", "Ben", "Cleo", "Dev", "Elena", "Femi", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Liam", "Maya", "Noor",
    "Omar", "Priya",
];
const LAST: [&str; 16] = [
    "Anders", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones", "Kowalski", "Lopez",
    "Morris", "Nguyen", "Okafor", "Patel",
];
const STREETS: [&str; 8] = ["Pine", "Maple", "Cedar", "Lake", "Hill", "Union", "Madison", "Spring"];
const SUFFIXES: [&str; 4] = ["St", "Ave", "Way", "Blvd"];
const ADJECTIVES: [&str; 8] = [
    "Oak", "Walnut", "Leather", "Velvet", "Glass", "Rattan", "Steel", "Linen",
];
const ITEMS: [(&str, &str); 12] = [
    ("sofa", "livingroom"),
    ("armchair", "livingroom"),
    ("coffee table", "livingroom"),
    ("bed frame", "bedroom"),
    ("dresser", "bedroom"),
    ("nightstand", "bedroom"),
    ("dining table", "dining"),
    ("dining chair", "dining"),
    ("desk", "office"),
    ("office chair", "office"),
    ("patio set", "outdoor"),
    ("bookcase", "study"),
];

pub fn user_id(i: usize) -> String {
    format!("C{:07}", i + 1)
}

pub fn product_id(i: usize) -> String {
    format!("P{:07}", i + 1)
}

/// The `i`th customer of the sample set.
fn customer(rng: &mut ChaCha8Rng, i: usize) -> Customer {
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    Customer {
        user_id: user_id(i),
        name: format!("{first} {last}"),
        address: format!(
            "{} {} {}",
            rng.random_range(1..9999),
            STREETS[rng.random_range(0..STREETS.len())],
            SUFFIXES[rng.random_range(0..SUFFIXES.len())]
        ),
        zip_code: Some(format!("{:05}", rng.random_range(98001..99404))),
        phone_number: format!("206-555-{:04}", rng.random_range(0..10_000)),
        email: format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), i + 1),
        extra: Default::default(),
        version: None,
    }
}

fn product(rng: &mut ChaCha8Rng, i: usize) -> Product {
    let (item, kind) = ITEMS[rng.random_range(0..ITEMS.len())];
    let adjective = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    // About one product in eight is out of stock.
    let quantity = if rng.random_range(0..8) == 0 {
        0
    } else {
        rng.random_range(1..=12)
    };
    Product {
        product_id: product_id(i),
        description: format!("{adjective} {item}"),
        product_type: kind.to_string(),
        quantity_available: quantity,
        extra: Default::default(),
        version: None,
    }
}

/// The `i`th rental: customer `i / 2` rents two distinct products; `first`
/// carries the product of the pair's first rental to its second.
fn rental(rng: &mut ChaCha8Rng, i: usize, products: usize, first: &mut usize) -> Rental {
    let user = i / 2;
    let product = if i.is_multiple_of(2) || products < 2 {
        *first = rng.random_range(0..products);
        *first
    } else {
        // Offset in 1..products: never the same product as the pair's first.
        (*first + 1 + rng.random_range(0..products - 1)) % products
    };
    Rental {
        product_id: product_id(product),
        user_id: user_id(user),
        extra: Default::default(),
        version: None,
    }
}

/// The three files written by [`generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub customers: PathBuf,
    pub products: PathBuf,
    pub rentals: PathBuf,
}

impl Generated {
    pub fn paths(&self) -> [&Path; 3] {
        [&self.customers, &self.products, &self.rentals]
    }
}

/// Write `records` customers, products and rentals into `dir`.
pub fn generate(dir: &Path, records: usize, seed: u64) -> io::Result<Generated> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for kind in RecordKind::ALL {
        // One stream per kind, so each file does not depend on the others' sizes.
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ kind as u64);
        let path = dir.join(kind.file_name());
        let mut writer = csv::Writer::from_writer(io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&path)?));
        writer.write_record(kind.columns())?;
        let mut pair_first = 0;
        for i in 0..records {
            let record: Record = match kind {
                RecordKind::Customer => customer(&mut rng, i).into(),
                RecordKind::Product => product(&mut rng, i).into(),
                RecordKind::Rental => rental(&mut rng, i, records, &mut pair_first).into(),
            };
            writer.write_record(record.to_fields())?;
        }
        writer.flush()?;
        written.push(path);
    }
    let mut paths = written.into_iter();
    Ok(Generated {
        customers: paths.next().expect("three kinds"),
        products: paths.next().expect("three kinds"),
        rentals: paths.next().expect("three kinds"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpn_common::csv_source::CsvSource;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_bytes_and_every_row_is_valid() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = generate(a.path(), 500, 7).unwrap();
        let gb = generate(b.path(), 500, 7).unwrap();
        for (pa, pb) in ga.paths().iter().zip(gb.paths()) {
            assert_eq!(std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
            let rows: Vec<_> = CsvSource::open(pa).unwrap().collect();
            assert_eq!(rows.len(), 500);
            assert!(rows.iter().all(Result::is_ok), "{:?}", rows.iter().find(|r| r.is_err()));
        }
        let other = tempfile::tempdir().unwrap();
        let gc = generate(other.path(), 500, 8).unwrap();
        assert_ne!(
            std::fs::read(&ga.customers).unwrap(),
            std::fs::read(&gc.customers).unwrap()
        );
    }

    #[test]
    fn rentals_are_unique_pairs_of_existing_ids_and_some_stock_is_zero() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(dir.path(), 1001, DEFAULT_SEED).unwrap();
        let customers: HashSet<String> = CsvSource::open(&g.customers)
            .unwrap()
            .map(|r| r.unwrap().record.key())
            .collect();
        let mut products = HashSet::new();
        let mut zero = 0;
        for row in CsvSource::open(&g.products).unwrap() {
            if let Record::Product(p) = row.unwrap().record {
                zero += usize::from(p.quantity_available == 0);
                products.insert(p.product_id);
            }
        }
        assert!(zero > 50 && zero < 250, "{zero} products out of stock");
        let mut pairs = HashSet::new();
        for row in CsvSource::open(&g.rentals).unwrap() {
            let Record::Rental(r) = row.unwrap().record else {
                panic!("rental file")
            };
            assert!(customers.contains(&r.user_id) && products.contains(&r.product_id));
            assert!(pairs.insert((r.product_id, r.user_id)), "duplicate rental pair");
        }
        assert_eq!(pairs.len(), 1001);
    }
}
