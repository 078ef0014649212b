use hexeract::Message;

#[derive(Debug, Message)]
#[message(name = "prices.quote.v1", query, output = u32, key = price)]
struct QuotePrice {
    price: f64,
}

fn main() {}
