//! Coordinates: Chinese map apps give GCJ-02 (or Baidu's BD-09) positions, offset 300–700 m from
//! WGS-84; everything is converted to WGS-84 before a distance is measured.
//!
//! Written by hand: the transforms are short published formulas, and the crates that carry them
//! are small and unmaintained.

use std::f64::consts::PI;

use crate::submission::Datum;

const A: f64 = 6_378_245.0; // Krasovsky 1940 semi-major axis, as GCJ-02 uses
const EE: f64 = 0.006_693_421_622_965_943; // its eccentricity squared

/// Whether GCJ-02 applies there (it is only defined inside China's rough bounding box).
fn in_china(lat: f64, lon: f64) -> bool {
    (72.004..=137.8347).contains(&lon) && (0.8293..=55.8271).contains(&lat)
}

fn delta(lat: f64, lon: f64) -> (f64, f64) {
    let x = lon - 105.0;
    let y = lat - 35.0;
    let mut dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * x.abs().sqrt();
    dlat += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    dlat += (20.0 * (y * PI).sin() + 40.0 * (y / 3.0 * PI).sin()) * 2.0 / 3.0;
    dlat += (160.0 * (y / 12.0 * PI).sin() + 320.0 * (y * PI / 30.0).sin()) * 2.0 / 3.0;
    let mut dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * x.abs().sqrt();
    dlon += (20.0 * (6.0 * x * PI).sin() + 20.0 * (2.0 * x * PI).sin()) * 2.0 / 3.0;
    dlon += (20.0 * (x * PI).sin() + 40.0 * (x / 3.0 * PI).sin()) * 2.0 / 3.0;
    dlon += (150.0 * (x / 12.0 * PI).sin() + 300.0 * (x / 30.0 * PI).sin()) * 2.0 / 3.0;
    let rad = lat / 180.0 * PI;
    let magic = 1.0 - EE * rad.sin() * rad.sin();
    let sqrt_magic = magic.sqrt();
    dlat = (dlat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrt_magic) * PI);
    dlon = (dlon * 180.0) / (A / sqrt_magic * rad.cos() * PI);
    (dlat, dlon)
}

/// WGS-84 → GCJ-02.
pub fn wgs84_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    if !in_china(lat, lon) {
        return (lat, lon);
    }
    let (dlat, dlon) = delta(lat, lon);
    (lat + dlat, lon + dlon)
}

/// GCJ-02 → WGS-84, by fixed-point iteration on the forward transform (exact to well under a
/// metre after a few rounds).
pub fn gcj02_to_wgs84(lat: f64, lon: f64) -> (f64, f64) {
    if !in_china(lat, lon) {
        return (lat, lon);
    }
    let (mut wlat, mut wlon) = (lat, lon);
    for _ in 0..10 {
        let (glat, glon) = wgs84_to_gcj02(wlat, wlon);
        let (elat, elon) = (glat - lat, glon - lon);
        wlat -= elat;
        wlon -= elon;
        if elat.abs() < 1e-9 && elon.abs() < 1e-9 {
            break;
        }
    }
    (wlat, wlon)
}

/// BD-09 → GCJ-02.
pub fn bd09_to_gcj02(lat: f64, lon: f64) -> (f64, f64) {
    let x_pi = PI * 3000.0 / 180.0;
    let x = lon - 0.0065;
    let y = lat - 0.006;
    let z = (x * x + y * y).sqrt() - 0.00002 * (y * x_pi).sin();
    let theta = y.atan2(x) - 0.000003 * (x * x_pi).cos();
    (z * theta.sin(), z * theta.cos())
}

/// A position in the given datum, as WGS-84.
pub fn to_wgs84(lat: f64, lon: f64, datum: Datum) -> (f64, f64) {
    match datum {
        Datum::Wgs84 => (lat, lon),
        Datum::Gcj02 => gcj02_to_wgs84(lat, lon),
        Datum::Bd09 => {
            let (glat, glon) = bd09_to_gcj02(lat, lon);
            gcj02_to_wgs84(glat, glon)
        }
    }
}

/// Great-circle distance in metres (haversine on a sphere of the mean Earth radius).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1) = (a.0.to_radians(), a.1.to_radians());
    let (lat2, lon2) = (b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6_371_008.8 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const YIYANG: (f64, f64) = (34.5145, 112.1792);

    #[test]
    fn gcj02_offsets_by_hundreds_of_metres_and_inverts() {
        let g = wgs84_to_gcj02(YIYANG.0, YIYANG.1);
        let offset = distance_m(YIYANG, g);
        assert!((300.0..700.0).contains(&offset), "{offset}");
        let back = gcj02_to_wgs84(g.0, g.1);
        assert!(distance_m(YIYANG, back) < 0.5);
    }

    #[test]
    fn bd09_converts_back_near_the_truth() {
        // BD-09 of a GCJ-02 point, by the forward formula.
        let g = wgs84_to_gcj02(YIYANG.0, YIYANG.1);
        let x_pi = PI * 3000.0 / 180.0;
        let z = (g.1 * g.1 + g.0 * g.0).sqrt() + 0.00002 * (g.0 * x_pi).sin();
        let theta = g.0.atan2(g.1) + 0.000003 * (g.1 * x_pi).cos();
        let bd = (z * theta.sin() + 0.006, z * theta.cos() + 0.0065);
        let back = to_wgs84(bd.0, bd.1, Datum::Bd09);
        assert!(
            distance_m(YIYANG, back) < 2.0,
            "{}",
            distance_m(YIYANG, back)
        );
    }

    #[test]
    fn outside_china_nothing_moves() {
        assert_eq!(wgs84_to_gcj02(48.85, 2.35), (48.85, 2.35));
    }

    #[test]
    fn distances_are_metres() {
        let d = distance_m((34.0, 112.0), (34.0 + 1.0 / 111.2, 112.0));
        assert!((d - 1000.0).abs() < 5.0, "{d}");
    }
}
