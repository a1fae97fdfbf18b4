//! sea-orm entities of the marketplace tables.

pub mod listing {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "marketplace_listings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub seller_id: String,
        pub title: String,
        pub description: String,
        pub category: String,
        pub currency_code: String,
        pub amount_minor: i64,
        pub status: String,
        pub create_time: DateTimeUtc,
        pub update_time: DateTimeUtc,
        pub publish_time: Option<DateTimeUtc>,
        pub version: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod plan {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "marketplace_plans")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub listing_id: String,
        pub name: String,
        pub currency_code: String,
        pub amount_minor: i64,
        pub interval: String,
        pub status: String,
        pub revision: i64,
        pub replaces_plan_id: Option<String>,
        pub create_time: DateTimeUtc,
        pub retire_time: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
