select
    customers.customer_id,
    count(orders.order_id) as orders,
    sum(orders.amount) as total_amount
from {{ ref('stg_customers') }} as customers
join {{ ref('stg_orders') }} as orders on orders.customer_id = customers.customer_id
group by customers.customer_id
