//! Metrics over OTLP: a snapshot of [`belt_core::metrics::Metric`]s (the values `belt
//! serve`'s `/metrics` shows) encoded as an `ExportMetricsServiceRequest`.
//!
//! The same names, units and labels as the Prometheus exposition, with one difference a
//! Prometheus user expects: a counter is a cumulative monotonic sum named without `_total`
//! (a collector's Prometheus exporter adds it back). Every point is cumulative since the
//! exporter started. Field numbers are those of `opentelemetry/proto/metrics/v1/metrics.proto`
//! and `collector/metrics/v1/metrics_service.proto`; the tests decode with the official
//! definitions.
//!
//! Metrics are few (tens of points) and sent once a period, so unlike spans they are
//! encoded the plain way: each message into its own buffer, then wrapped.

use belt_core::metrics::{Metric, MetricKind, Point, Value};

use crate::proto::{self, KeyValue};

/// `AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE`.
const CUMULATIVE: u64 = 2;

/// An `ExportMetricsServiceRequest` body: `metrics` under belt's resource and scope, their
/// points cumulative from `start` to `now` (Unix nanoseconds).
pub fn metrics_request(service_name: &str, metrics: &[Metric], (start, now): (u64, u64)) -> Vec<u8> {
    let mut scope_metrics = Vec::new();
    proto::put_message(&mut scope_metrics, 1, proto::put_scope);
    for m in metrics.iter().filter(|m| !m.points.is_empty()) {
        proto::put_message(&mut scope_metrics, 2, |b| metric(b, m, (start, now)));
    }
    let mut resource_metrics = Vec::new();
    proto::put_message(&mut resource_metrics, 1, |b| proto::put_resource(b, service_name));
    proto::put_message(&mut resource_metrics, 2, |b| b.extend_from_slice(&scope_metrics));
    let mut request = Vec::new();
    proto::put_message(&mut request, 1, |b| b.extend_from_slice(&resource_metrics));
    request
}

/// A `Metric` message: name 1, description 2, unit 3, then gauge 5 | sum 7 | histogram 9.
fn metric(b: &mut Vec<u8>, m: &Metric, times: (u64, u64)) {
    proto::put_str(b, 1, m.name);
    proto::put_str(b, 2, m.help);
    proto::put_str(b, 3, m.unit);
    match m.kind {
        MetricKind::Gauge => proto::put_message(b, 5, |g| points(g, &m.points, times)),
        MetricKind::Counter => proto::put_message(b, 7, |s| {
            points(s, &m.points, times);
            proto::put_varint_field(s, 2, CUMULATIVE);
            proto::put_varint_field(s, 3, 1); // is_monotonic
        }),
        MetricKind::Histogram => proto::put_message(b, 9, |h| {
            points(h, &m.points, times);
            proto::put_varint_field(h, 2, CUMULATIVE);
        }),
    }
}

/// Each point as `data_points` (field 1): a `NumberDataPoint` or a `HistogramDataPoint`.
fn points(b: &mut Vec<u8>, points: &[Point], (start, now): (u64, u64)) {
    for p in points {
        proto::put_message(b, 1, |d| {
            proto::put_fixed64_field(d, 2, start);
            proto::put_fixed64_field(d, 3, now);
            match &p.value {
                Value::Number(v) => {
                    proto::put_fixed64_field(d, 4, v.to_bits()); // as_double
                    labels(d, 7, p);
                }
                Value::Histogram(h) => {
                    proto::put_fixed64_field(d, 4, h.count);
                    proto::put_fixed64_field(d, 5, h.sum.to_bits());
                    proto::put_packed_fixed64(d, 6, &h.counts);
                    let bounds: Vec<u64> = h.bounds.iter().map(|b| b.to_bits()).collect();
                    proto::put_packed_fixed64(d, 7, &bounds);
                    labels(d, 9, p);
                }
            }
        });
    }
}

fn labels(b: &mut Vec<u8>, field: u8, p: &Point) {
    for (k, v) in &p.labels {
        KeyValue::str(k, v.as_str()).put(b, field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use belt_core::metrics::{Histogram, SECONDS_BUCKETS};
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
    use prost::Message;

    #[test]
    fn each_kind_decodes_with_the_official_definitions() {
        let mut h = Histogram::over(&SECONDS_BUCKETS);
        h.observe(0.07);
        h.observe(400.0);
        let metrics = [
            Metric::new("belt_llm_calls", MetricKind::Counter, "{call}", "Calls.")
                .number(vec![("provider", "openai".into())], 3.0),
            Metric::new("belt_runs_queued", MetricKind::Gauge, "{run}", "Queued.").number(Vec::new(), 2.0),
            Metric {
                points: vec![Point { labels: vec![("tier", "worker".into())], value: Value::Histogram(h) }],
                ..Metric::new("belt_step_duration_seconds", MetricKind::Histogram, "s", "Steps.")
            },
            Metric::new("belt_breaker_open", MetricKind::Gauge, "1", "No points: left out."),
        ];
        let body = metrics_request("svc", &metrics, (10, 20));
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let rm = &request.resource_metrics[0];
        let service = &rm.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let sm = &rm.scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "belt");
        assert_eq!(sm.metrics.len(), 3);

        let calls = &sm.metrics[0];
        assert_eq!((calls.name.as_str(), calls.unit.as_str()), ("belt_llm_calls", "{call}"));
        let Some(Data::Sum(sum)) = &calls.data else { panic!("{calls:?}") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 2);
        let point = &sum.data_points[0];
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (10, 20));
        assert_eq!(point.value, Some(number_data_point::Value::AsDouble(3.0)));
        assert_eq!(point.attributes[0].key, "provider");

        let Some(Data::Gauge(gauge)) = &sm.metrics[1].data else { panic!() };
        assert_eq!(gauge.data_points[0].value, Some(number_data_point::Value::AsDouble(2.0)));

        let Some(Data::Histogram(hist)) = &sm.metrics[2].data else { panic!() };
        let p = &hist.data_points[0];
        assert_eq!((p.count, p.sum), (2, Some(400.07)));
        assert_eq!(p.explicit_bounds, SECONDS_BUCKETS.to_vec());
        assert_eq!(p.bucket_counts.len(), SECONDS_BUCKETS.len() + 1);
        assert_eq!((p.bucket_counts[2], p.bucket_counts[12]), (1, 1));
        assert_eq!(p.attributes[0].key, "tier");
    }
}
